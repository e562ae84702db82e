package progress

import (
	"bytes"
	"strings"
	"testing"
)

// TestPlainLines checks the lines written when the writer is not a terminal.
func TestPlainLines(t *testing.T) {
	for _, tc := range []struct {
		name  string
		total int64
		opt   Options
		add   int64
		want  []string
	}{
		{"count", 8, Options{}, 2, []string{"job: 2/8 (25.0%), ", "/s, ", "elapsed "}},
		{"unit", 2, Options{Unit: "q"}, 2, []string{"job: 2/2 (100.0%) q, ", " q/s, elapsed "}},
		{"bytes resumed", 4 << 20, Options{Bytes: true, Already: 1 << 20}, 1 << 20, []string{"job: 2.0 MiB/4.0 MiB (50.0%), ", " MiB/s"}},
		{"unknown total", 0, Options{}, 5, []string{"job: 5, "}},
	} {
		var out bytes.Buffer
		b := New(&out, tc.total, "job", tc.opt)
		b.Add(tc.add)
		b.Finish()
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s: %q lacks %q", tc.name, out.String(), w)
			}
		}
	}
	New(nil, 1, "quiet", Options{}).Finish() // a nil writer writes nothing
}
