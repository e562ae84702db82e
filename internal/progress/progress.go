// Package progress reports the progress of long work: a bar with rate and ETA
// on a terminal (github.com/schollz/progressbar), plain lines in logs.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar counts units of work toward a total.
type Bar struct {
	mu       sync.Mutex
	bar      *progressbar.ProgressBar // nil when not on a terminal
	w        io.Writer
	desc     string
	opt      Options
	total    int64 // <= 0: unknown
	done     int64
	start    time.Time
	lastLine time.Time
}

// Options tune a Bar.
type Options struct {
	Bytes   bool          // units are bytes: show MiB and MiB/s
	Unit    string        // name of a unit in plain lines, e.g. "q" (not for Bytes)
	Already int64         // units done before this run (a resumed download); not in the rate
	Every   time.Duration // plain-line interval when not on a terminal (default 5 s)
}

// New returns a Bar writing to w (nothing is written when w is nil); total
// <= 0 means unknown. On a terminal it draws a bar; otherwise it prints a
// line every few seconds.
func New(w io.Writer, total int64, desc string, opt Options) *Bar {
	b := &Bar{w: w, desc: desc, opt: opt, total: total, done: opt.Already, start: time.Now()}
	if b.opt.Every <= 0 {
		b.opt.Every = 5 * time.Second
	}
	b.lastLine = b.start
	if w == nil {
		return b
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		max := total
		if max <= 0 {
			max = -1
		}
		opts := []progressbar.Option{
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionThrottle(100 * time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		}
		if opt.Bytes {
			opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionShowTotalBytes(true))
		} else {
			opts = append(opts, progressbar.OptionShowCount(), progressbar.OptionShowIts())
			if opt.Unit != "" {
				opts = append(opts, progressbar.OptionSetItsString(opt.Unit))
			}
		}
		b.bar = progressbar.NewOptions64(max, opts...)
		if opt.Already > 0 {
			_ = b.bar.Set64(opt.Already)
		}
	}
	return b
}

// Add records n more units done.
func (b *Bar) Add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	if b.bar != nil {
		_ = b.bar.Add64(n)
		return
	}
	if t := time.Now(); b.w != nil && t.Sub(b.lastLine) >= b.opt.Every {
		b.lastLine = t
		fmt.Fprintln(b.w, b.line(t))
	}
}

// Finish prints the final state.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bar != nil {
		_ = b.bar.Finish()
		return
	}
	if b.w != nil {
		fmt.Fprintln(b.w, b.line(time.Now()))
	}
}

// line is a plain progress line, e.g. "coqa: 2/8 (25.0%) q, 1.50 q/s, ETA
// 4s, elapsed 1.333s" or "x.gguf: 12.0/40.0 MiB (30.0%), 8.00 MiB/s, ...".
func (b *Bar) line(t time.Time) string {
	el := t.Sub(b.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(b.done-b.opt.Already) / el
	}
	amount := func(v int64) string {
		if b.opt.Bytes {
			return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20))
		}
		return fmt.Sprint(v)
	}
	s := b.desc + ": " + amount(b.done)
	if b.total > 0 {
		s += fmt.Sprintf("/%s (%.1f%%)", amount(b.total), 100*float64(b.done)/float64(b.total))
	}
	switch {
	case b.opt.Bytes:
		s += fmt.Sprintf(", %.2f MiB/s", rate/(1<<20))
	case b.opt.Unit != "":
		s += fmt.Sprintf(" %s, %.2f %s/s", b.opt.Unit, rate, b.opt.Unit)
	default:
		s += fmt.Sprintf(", %.2f/s", rate)
	}
	if b.total > 0 && rate > 0 && b.done < b.total {
		eta := time.Duration(float64(b.total-b.done) / rate * float64(time.Second))
		s += ", ETA " + eta.Round(time.Second).String()
	}
	return s + ", elapsed " + t.Sub(b.start).Round(time.Millisecond).String()
}
