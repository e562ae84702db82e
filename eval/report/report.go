// Package report turns a sweep's results directory into the study's answer:
// CSV tables, figures (PNG and SVG, drawn with gonum/plot in the
// colour-blind-safe Okabe-Ito palette), a Markdown report and a
// self-contained HTML report with the figures embedded.
//
// Figures: F1 and exact match against bits per weight with the Pareto
// frontier marked, F1 against file size, KL divergence from the reference
// against bits per weight, memory bars (weights, KV cache, peak), time to
// first token, decode latency percentiles and decode throughput by batch
// size. Experiments that failed appear in the summary table with their
// error and are left out of the figures.
package report

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"qllama/eval/sweep"
	"qllama/internal/atomicfile"
)

// Row is one experiment as the report sees it.
type Row struct {
	*sweep.Result
	OK bool // finished without error
}

// Name is the experiment's name.
func (r Row) Name() string { return r.Result.Name }

// LinearBPW is the bits per weight of the linear layers (0 if unknown).
func (r Row) LinearBPW() float64 {
	if r.Convert == nil {
		return 0
	}
	return r.Convert.LinearBPW
}

// FileMB is the converted file's size in megabytes (10^6 bytes).
func (r Row) FileMB() float64 {
	if r.Convert == nil {
		return 0
	}
	return float64(r.Convert.FileBytes) / 1e6
}

// Options configure Build.
type Options struct {
	// Results is the sweep's results directory; Out the report directory.
	Results, Out string
	// Title heads the report (default "qllama quantization study").
	Title string
	// KVContext is the context length at which the KV cache is drawn in
	// the memory figure (default 2048).
	KVContext int
}

// Report lists what Build wrote, relative to Options.Out.
type Report struct {
	Figures []string // figure base names: figures/NAME.png and .svg
	Tables  []string // CSV files
	HTML    string
	MD      string
}

// Build reads the results and writes the report.
func Build(opt Options) (*Report, error) {
	if opt.Out == "" {
		return nil, fmt.Errorf("report: no output directory")
	}
	if opt.Title == "" {
		opt.Title = "qllama quantization study"
	}
	if opt.KVContext <= 0 {
		opt.KVContext = 2048
	}
	res, err := sweep.ReadResults(opt.Results)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	rows := Rows(res)
	if err := os.MkdirAll(filepath.Join(opt.Out, "figures"), 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	rep := &Report{HTML: "report.html", MD: "report.md"}
	figs, err := drawFigures(rows, opt)
	if err != nil {
		return nil, err
	}
	for _, f := range figs {
		if err := f.save(filepath.Join(opt.Out, "figures")); err != nil {
			return nil, fmt.Errorf("report: figure %s: %w", f.name, err)
		}
		rep.Figures = append(rep.Figures, f.name)
	}
	tables := buildTables(rows, opt)
	for _, t := range tables {
		if err := t.writeCSV(filepath.Join(opt.Out, t.file)); err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		rep.Tables = append(rep.Tables, t.file)
	}
	doc := &document{opt: opt, rows: rows, figs: figs, tables: tables}
	if err := atomicfile.WriteFile(filepath.Join(opt.Out, rep.MD), []byte(doc.markdown())); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	html, err := doc.html(filepath.Join(opt.Out, "figures"))
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(opt.Out, rep.HTML), html); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return rep, nil
}

// Rows orders results for the report: finished experiments by decreasing
// linear-layer bits per weight (then name), failed ones last.
func Rows(res []*sweep.Result) []Row {
	rows := make([]Row, len(res))
	for i, r := range res {
		rows[i] = Row{Result: r, OK: r.Status == sweep.StatusOK}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.OK != b.OK {
			return a.OK
		}
		if a.LinearBPW() != b.LinearBPW() {
			return a.LinearBPW() > b.LinearBPW()
		}
		return a.Name() < b.Name()
	})
	return rows
}

// Point is an experiment on a cost/benefit plane.
type Point struct {
	Cost  float64 // lower is better (bits per weight, megabytes)
	Value float64 // higher is better (F1, EM, -KL)
}

// ParetoFront returns the indices, by increasing cost, of the points no other
// point dominates: none has cost <= and value >= with one of them strict.
// Equal points are all kept.
func ParetoFront(pts []Point) []int {
	var front []int
	for i, p := range pts {
		dominated := false
		for j, q := range pts {
			if j != i && q.Cost <= p.Cost && q.Value >= p.Value && (q.Cost < p.Cost || q.Value > p.Value) {
				dominated = true
				break
			}
		}
		if !dominated {
			front = append(front, i)
		}
	}
	sort.SliceStable(front, func(a, b int) bool {
		pa, pb := pts[front[a]], pts[front[b]]
		if pa.Cost != pb.Cost {
			return pa.Cost < pb.Cost
		}
		return pa.Value > pb.Value
	})
	return front
}

// settings describes an experiment's quantization settings in one line.
func settings(e sweep.Experiment) string {
	var parts []string
	parts = append(parts, e.Method)
	if e.Bits > 0 {
		parts = append(parts, fmt.Sprintf("%d-bit", e.Bits))
	}
	switch {
	case e.Group > 0:
		parts = append(parts, fmt.Sprintf("g%d", e.Group))
	case e.Group < 0:
		parts = append(parts, "per-channel")
	}
	if e.Sym {
		parts = append(parts, "sym")
	}
	if e.DoubleQuant {
		parts = append(parts, "double-quant")
	}
	if e.Type != "" {
		parts = append(parts, "linear "+e.Type)
	}
	if e.EmbedType != "" {
		parts = append(parts, "embed "+e.EmbedType)
	}
	if e.HeadType != "" {
		parts = append(parts, "head "+e.HeadType)
	}
	if e.Calibration.Dataset != "" {
		parts = append(parts, fmt.Sprintf("calib %s %dx%d", e.Calibration.Dataset, e.Calibration.Samples, e.Calibration.SeqLen))
	}
	if len(e.Params) > 0 {
		keys := make([]string, 0, len(e.Params))
		for k := range e.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%v", k, e.Params[k]))
		}
	}
	return strings.Join(parts, " ")
}
