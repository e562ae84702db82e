package report

import (
	"bytes"
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"qllama/eval/sweep"
)

func TestParetoFront(t *testing.T) {
	tests := []struct {
		name string
		pts  []Point
		want []int
	}{
		{"empty", nil, nil},
		{"one", []Point{{4, 0.5}}, []int{0}},
		{"dominated", []Point{{16, 0.62}, {4, 0.60}, {4.5, 0.59}, {3, 0.52}, {3.25, 0.41}}, []int{3, 1, 0}},
		{"equal cost keeps the better", []Point{{4, 0.5}, {4, 0.6}}, []int{1}},
		{"equal value keeps the cheaper", []Point{{4, 0.6}, {8, 0.6}}, []int{0}},
		{"ties all kept", []Point{{4, 0.6}, {4, 0.6}, {2, 0.1}}, []int{2, 0, 1}},
		{"monotone chain", []Point{{2, 0.1}, {3, 0.2}, {4, 0.3}}, []int{0, 1, 2}},
		{"cheapest is best", []Point{{8, 0.2}, {2, 0.9}, {4, 0.5}}, []int{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParetoFront(tc.pts); !slices.Equal(got, tc.want) {
				t.Errorf("ParetoFront = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestParetoFrontBruteForce checks the front against its definition on
// pseudo-random points with many ties.
func TestParetoFrontBruteForce(t *testing.T) {
	seed := uint32(7)
	rnd := func() float64 { seed = seed*1664525 + 1013904223; return float64(seed>>28) / 4 }
	for trial := 0; trial < 200; trial++ {
		pts := make([]Point, 1+trial%12)
		for i := range pts {
			pts[i] = Point{rnd(), rnd()}
		}
		front := ParetoFront(pts)
		in := map[int]bool{}
		for _, i := range front {
			in[i] = true
		}
		for i, p := range pts {
			dom := false
			for _, q := range pts {
				if q.Cost <= p.Cost && q.Value >= p.Value && q != p {
					dom = true
				}
			}
			if dom == in[i] {
				t.Fatalf("points %v: index %d dominated=%v but on front=%v", pts, i, dom, in[i])
			}
		}
		for k := 1; k < len(front); k++ {
			if pts[front[k]].Cost < pts[front[k-1]].Cost {
				t.Fatalf("front %v not sorted by cost", front)
			}
		}
	}
}

func TestBuildFixture(t *testing.T) {
	out := t.TempDir()
	rep, err := Build(Options{Results: "testdata/results", Out: out})
	if err != nil {
		t.Fatal(err)
	}
	wantFigs := []string{"f1_vs_bpw", "em_vs_bpw", "f1_vs_size", "kl_vs_bpw", "memory", "ttft", "decode_latency", "throughput"}
	if !slices.Equal(rep.Figures, wantFigs) {
		t.Errorf("figures %v, want %v", rep.Figures, wantFigs)
	}
	html, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range wantFigs {
		for _, ext := range []string{".png", ".svg"} {
			st, err := os.Stat(filepath.Join(out, "figures", f+ext))
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() < 4000 || st.Size() > 2<<20 {
				t.Errorf("%s%s: %d bytes", f, ext, st.Size())
			}
		}
		png, _ := os.ReadFile(filepath.Join(out, "figures", f+".png"))
		if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s.png is not a PNG", f)
		}
		if !bytes.Contains(html, []byte(`id="fig-`+f+`"`)) || !bytes.Contains(html, []byte("figures/"+f+".svg")) {
			t.Errorf("report.html does not reference %s", f)
		}
		if !bytes.Contains(md, []byte("(figures/"+f+".png)")) {
			t.Errorf("report.md does not reference %s", f)
		}
	}
	if n := bytes.Count(html, []byte(`src="data:image/png;base64,`)); n != len(wantFigs) {
		t.Errorf("report.html embeds %d images, want %d", n, len(wantFigs))
	}
	if bytes.Contains(html, []byte(`src="figures/`)) {
		t.Error("report.html loads an image from a file: not self-contained")
	}

	wantTables := map[string]int{"summary.csv": 12, "accuracy.csv": 11, "memory.csv": 11, "latency.csv": 11, "throughput.csv": 44}
	for file, rows := range wantTables {
		fh, err := os.Open(filepath.Join(out, file))
		if err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(fh).ReadAll()
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(recs)-1 != rows {
			t.Errorf("%s: %d rows, want %d", file, len(recs)-1, rows)
		}
		if !bytes.Contains(html, []byte(`href="`+file+`"`)) {
			t.Errorf("report.html does not link %s", file)
		}
	}

	// The accuracy table marks the fixture's frontier: F1 against bpw is
	// rtn_int2 (2.5) < gptq_3bit (3.125) < gptq_4bit (4.125) < awq (4.25) < bnb_8bit < fp16.
	fh, _ := os.Open(filepath.Join(out, "accuracy.csv"))
	recs, _ := csv.NewReader(fh).ReadAll()
	fh.Close()
	col := slices.Index(recs[0], "pareto_f1_bpw")
	var front []string
	for _, r := range recs[1:] {
		if r[col] == "yes" {
			front = append(front, r[0])
		}
	}
	slices.Sort(front)
	want := []string{"awq_4bit_g128", "bnb_8bit", "fp16_baseline", "gptq_3bit_g128", "gptq_4bit_g128", "rtn_int2_g64"}
	if !slices.Equal(front, want) {
		t.Errorf("F1/bpw frontier %v, want %v", front, want)
	}
	// The failed experiment is in the summary with its error, last.
	if !strings.Contains(string(md), "| gptq_2bit_g64 | failed |") || !bytes.Contains(html, []byte(`class="failed"`)) {
		t.Error("the failed experiment is not reported")
	}
}

func TestBuildErrors(t *testing.T) {
	if _, err := Build(Options{Results: filepath.Join(t.TempDir(), "none"), Out: t.TempDir()}); err == nil {
		t.Error("missing results: no error")
	}
	if _, err := Build(Options{Results: "testdata/results"}); err == nil {
		t.Error("no output directory: no error")
	}
	// Only failures: every figure is still drawn (marked as without data).
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "x"), 0o755)
	r := &sweep.Result{Name: "x", Status: sweep.StatusFailed, Error: "boom"}
	if err := r.WriteJSON(filepath.Join(dir, "x", sweep.ResultFile)); err != nil {
		t.Fatal(err)
	}
	rep, err := Build(Options{Results: dir, Out: t.TempDir()})
	if err != nil || len(rep.Figures) != 8 {
		t.Errorf("failures only: %v, %v", rep, err)
	}
}
