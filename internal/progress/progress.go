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
	total    int64
	done     int64
	start    time.Time
	lastLine time.Time
	bytes    bool
	every    time.Duration
}

// Options tune a Bar.
type Options struct {
	Bytes bool          // units are bytes: show MB and MB/s
	Every time.Duration // plain-line interval when not on a terminal (default 5 s)
}

// New returns a Bar writing to w (nothing is written when w is nil). On a
// terminal it draws a bar; otherwise it prints a line every few seconds.
func New(w io.Writer, total int64, desc string, opt Options) *Bar {
	b := &Bar{w: w, desc: desc, total: total, start: time.Now(), bytes: opt.Bytes, every: opt.Every}
	if b.every <= 0 {
		b.every = 5 * time.Second
	}
	b.lastLine = b.start
	if w == nil {
		return b
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		opts := []progressbar.Option{
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionThrottle(100 * time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		}
		if opt.Bytes {
			opts = append(opts, progressbar.OptionShowBytes(true))
		} else {
			opts = append(opts, progressbar.OptionShowIts())
		}
		b.bar = progressbar.NewOptions64(total, opts...)
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
	if b.w != nil && time.Since(b.lastLine) >= b.every {
		b.lastLine = time.Now()
		fmt.Fprintln(b.w, b.line())
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
		fmt.Fprintln(b.w, b.line())
	}
}

func (b *Bar) line() string {
	el := time.Since(b.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(b.done) / el
	}
	eta := "?"
	if rate > 0 && b.total > 0 {
		eta = (time.Duration(float64(b.total-b.done)/rate) * time.Second).Round(time.Second).String()
	}
	pct := 0.0
	if b.total > 0 {
		pct = 100 * float64(b.done) / float64(b.total)
	}
	if b.bytes {
		return fmt.Sprintf("%s: %.0f/%.0f MB (%.0f%%), %.1f MB/s, %.1fs elapsed, ETA %s", b.desc,
			float64(b.done)/1e6, float64(b.total)/1e6, pct, rate/1e6, el, eta)
	}
	return fmt.Sprintf("%s: %d/%d (%.0f%%), %.2f/s, %.1fs elapsed, ETA %s", b.desc, b.done, b.total, pct, rate, el, eta)
}
