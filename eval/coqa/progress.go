package coqa

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// plainInterval is how often a progress line is printed when the progress
// writer is not a terminal.
const plainInterval = 5 * time.Second

// progress reports a count towards a total: a progressbar on a terminal,
// plain lines with rate and ETA otherwise (logs, CI). A nil writer discards.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	bar   *progressbar.ProgressBar
	label string
	unit  string
	bytes bool
	total int64 // <= 0: unknown
	done  int64
	base  int64 // already done before start (resumed download)
	start time.Time
	last  time.Time
	now   func() time.Time
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newProgress(w io.Writer, label, unit string, total, already int64, bytes bool) *progress {
	p := &progress{w: w, label: label, unit: unit, bytes: bytes, total: total, done: already, base: already, now: time.Now}
	p.start = p.now()
	p.last = p.start
	if w == nil {
		return p
	}
	if isTerminal(w) {
		max := total
		if max <= 0 {
			max = -1
		}
		opts := []progressbar.Option{
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(label),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100 * time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		}
		if bytes {
			opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionShowTotalBytes(true))
		} else {
			opts = append(opts, progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString(unit))
		}
		p.bar = progressbar.NewOptions64(max, opts...)
		if already > 0 {
			_ = p.bar.Set64(already)
		}
	}
	return p
}

// Add records n more units done.
func (p *progress) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if p.w == nil {
		return
	}
	if p.bar != nil {
		_ = p.bar.Add64(n)
		return
	}
	if t := p.now(); t.Sub(p.last) >= plainInterval {
		p.last = t
		fmt.Fprintln(p.w, p.lineLocked(t))
	}
}

// Finish prints the final line (or completes the bar).
func (p *progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w == nil {
		return
	}
	if p.bar != nil {
		_ = p.bar.Finish()
		return
	}
	fmt.Fprintln(p.w, p.lineLocked(p.now()))
}

func (p *progress) lineLocked(t time.Time) string {
	el := t.Sub(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(p.done-p.base) / el
	}
	amount := func(v int64) string {
		if p.bytes {
			return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20))
		}
		return fmt.Sprint(v)
	}
	s := p.label + ": " + amount(p.done)
	if p.total > 0 {
		s += fmt.Sprintf("/%s (%.1f%%)", amount(p.total), 100*float64(p.done)/float64(p.total))
	}
	if p.bytes {
		s += fmt.Sprintf(", %.2f MiB/s", rate/(1<<20))
	} else {
		s += fmt.Sprintf(" %s, %.2f %s/s", p.unit, rate, p.unit)
	}
	if p.total > 0 && rate > 0 && p.done < p.total {
		eta := time.Duration(float64(p.total-p.done) / rate * float64(time.Second))
		s += ", ETA " + eta.Round(time.Second).String()
	}
	s += ", elapsed " + t.Sub(p.start).Round(time.Millisecond).String()
	return s
}
