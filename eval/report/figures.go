package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"qllama/internal/atomicfile"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// OkabeIto is the colour-blind-safe palette of Okabe and Ito (2008), black
// last.
var OkabeIto = []color.Color{
	color.RGBA{0xE6, 0x9F, 0x00, 0xFF}, // orange
	color.RGBA{0x56, 0xB4, 0xE9, 0xFF}, // sky blue
	color.RGBA{0x00, 0x9E, 0x73, 0xFF}, // bluish green
	color.RGBA{0xF0, 0xE4, 0x42, 0xFF}, // yellow
	color.RGBA{0x00, 0x72, 0xB2, 0xFF}, // blue
	color.RGBA{0xD5, 0x5E, 0x00, 0xFF}, // vermillion
	color.RGBA{0xCC, 0x79, 0xA7, 0xFF}, // reddish purple
	color.RGBA{0x00, 0x00, 0x00, 0xFF}, // black
}

// shapes pair with the palette so that experiments stay distinct in grey.
var shapes = []draw.GlyphDrawer{
	draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.PyramidGlyph{},
	draw.BoxGlyph{}, draw.RingGlyph{}, draw.CrossGlyph{}, draw.PlusGlyph{},
}

// style returns the colour and glyph of the i-th experiment.
func style(i int) (color.Color, draw.GlyphDrawer) {
	// Yellow is the least visible on white: use it last.
	order := []int{0, 1, 2, 4, 5, 6, 7, 3}
	return OkabeIto[order[i%len(order)]], shapes[(i/len(order)+i)%len(shapes)]
}

// Figure size.
const (
	figW = 8 * vg.Inch
	figH = 5 * vg.Inch
	dpi  = 150
)

// figure is one drawn figure.
type figure struct {
	name    string // file base name
	title   string
	caption string
	p       *plot.Plot
	h       vg.Length
}

func (f *figure) height() vg.Length {
	if f.h > 0 {
		return f.h
	}
	return figH
}

// save writes DIR/name.png and DIR/name.svg.
func (f *figure) save(dir string) error {
	png, err := f.png()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, f.name+".png"), png); err != nil {
		return err
	}
	sv := vgsvg.New(figW, f.height())
	f.p.Draw(draw.New(sv))
	var buf bytes.Buffer
	if _, err := sv.WriteTo(&buf); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, f.name+".svg"), buf.Bytes())
}

func (f *figure) png() ([]byte, error) {
	c := vgimg.NewWith(vgimg.UseWH(figW, f.height()), vgimg.UseDPI(dpi))
	dc := draw.New(c)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	f.p.Draw(dc)
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// newPlot returns a plot with the report's fonts and grid.
func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = 14
	p.X.Label.Text = x
	p.Y.Label.Text = y
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = 12
		a.Tick.Label.Font.Size = 10
	}
	p.Legend.TextStyle.Font.Size = 10
	p.Add(plotter.NewGrid())
	return p
}

// emptyPlot marks a figure without data.
func emptyPlot(title, why string) *plot.Plot {
	p := newPlot(title, "", "")
	p.Title.Text = title + "\n(" + why + ")"
	p.HideAxes()
	return p
}

// drawFigures draws every figure of the report.
func drawFigures(rows []Row, opt Options) ([]*figure, error) {
	var ok []Row
	for _, r := range rows {
		if r.OK {
			ok = append(ok, r)
		}
	}
	colour := map[string]int{}
	for i, r := range ok {
		colour[r.Name()] = i
	}
	type mk func() (*figure, error)
	makers := []mk{
		func() (*figure, error) {
			return tradeoff(ok, colour, "f1_vs_bpw", "CoQA F1 vs bits per weight", "bits per weight, linear layers", "CoQA F1 (%)",
				func(r Row) (float64, float64, bool) {
					return r.LinearBPW(), 100 * coqaF1(r), r.CoQA != nil && r.Convert != nil
				}, false, "F1 on CoQA against the storage cost of the attention and MLP weights; the dashed line joins the Pareto frontier (no other experiment is both smaller and more accurate).")
		},
		func() (*figure, error) {
			return tradeoff(ok, colour, "em_vs_bpw", "CoQA exact match vs bits per weight", "bits per weight, linear layers", "CoQA exact match (%)",
				func(r Row) (float64, float64, bool) {
					return r.LinearBPW(), 100 * coqaEM(r), r.CoQA != nil && r.Convert != nil
				}, false, "Exact match on CoQA against bits per weight, Pareto frontier dashed.")
		},
		func() (*figure, error) {
			return tradeoff(ok, colour, "f1_vs_size", "CoQA F1 vs file size", "model file size (MB)", "CoQA F1 (%)",
				func(r Row) (float64, float64, bool) {
					return r.FileMB(), 100 * coqaF1(r), r.CoQA != nil && r.Convert != nil && r.Convert.FileBytes > 0
				}, false, "F1 against the whole file (embeddings, head and norms included), Pareto frontier dashed.")
		},
		func() (*figure, error) {
			return tradeoff(ok, colour, "kl_vs_bpw", "KL divergence from the reference vs bits per weight", "bits per weight, linear layers", "mean KL divergence (nats, log scale)",
				func(r Row) (float64, float64, bool) {
					if r.PPL == nil || r.Convert == nil || r.PPL.KLMean <= 0 {
						return 0, 0, false
					}
					return r.LinearBPW(), r.PPL.KLMean, true
				}, true, "Mean per-token KL(P_ref || P_model) divergence of each model's next-token distribution from the unquantized reference's; lower is better, the frontier is dashed. The reference itself (KL 0) is not drawn on the log scale.")
		},
		func() (*figure, error) { return memoryBars(ok, opt.KVContext) },
		func() (*figure, error) { return ttftBars(ok) },
		func() (*figure, error) { return latencyBars(ok) },
		func() (*figure, error) { return throughputLines(ok, colour) },
	}
	var figs []*figure
	for _, m := range makers {
		f, err := m()
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		figs = append(figs, f)
	}
	return figs, nil
}

func coqaF1(r Row) float64 {
	if r.CoQA == nil {
		return math.NaN()
	}
	return r.CoQA.F1
}

func coqaEM(r Row) float64 {
	if r.CoQA == nil {
		return math.NaN()
	}
	return r.CoQA.EM
}

// tradeoff draws one point per experiment, labelled, with the Pareto front
// (lower cost, higher value; lower value when lowerBetter) as a dashed line.
func tradeoff(rows []Row, colour map[string]int, name, title, xl, yl string, get func(Row) (x, y float64, ok bool), lowerBetter bool, caption string) (*figure, error) {
	logX := name != "f1_vs_size"
	f := &figure{name: name, title: title, caption: caption}
	var pts []Point
	var xys plotter.XYs
	var labels []string // experiment names, in legend order
	var idx []int
	for _, r := range rows {
		x, y, ok := get(r)
		if !ok || math.IsNaN(x) || math.IsNaN(y) || math.IsInf(y, 0) {
			continue
		}
		v := y
		if lowerBetter {
			// Drawn as log10 on a linear axis with decade labels
			// (positive values only).
			y = math.Log10(y)
			v = -y
		}
		pts = append(pts, Point{Cost: x, Value: v})
		xys = append(xys, plotter.XY{X: x, Y: y})
		labels = append(labels, r.Name())
		idx = append(idx, colour[r.Name()])
	}
	if len(xys) == 0 {
		f.p = emptyPlot(title, "no experiment has this measurement")
		return f, nil
	}
	p := newPlot(title, xl, yl)
	if lowerBetter {
		p.Y.Tick.Marker = decadeTicks{}
	}
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = bpwTicks{}
		p.X.Label.Text += " (log scale)"
	}
	front := ParetoFront(pts)
	if len(front) > 1 {
		line := make(plotter.XYs, len(front))
		for k, i := range front {
			line[k] = xys[i]
		}
		l, err := plotter.NewLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		l.Color = color.Gray{0x55}
		l.Width = vg.Points(1.2)
		l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		p.Add(l)
		p.Legend.Add("Pareto frontier", l)
	}
	onFront := map[int]bool{}
	for _, i := range front {
		onFront[i] = true
	}
	var ring *plotter.Scatter
	for i, xy := range xys {
		s, err := plotter.NewScatter(plotter.XYs{xy})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		c, g := style(idx[i])
		s.GlyphStyle = draw.GlyphStyle{Color: c, Shape: g, Radius: vg.Points(5)}
		p.Add(s)
		p.Legend.Add(labels[i], s)
		if onFront[i] {
			ring, _ = plotter.NewScatter(plotter.XYs{xy})
			ring.GlyphStyle = draw.GlyphStyle{Color: color.Black, Shape: draw.RingGlyph{}, Radius: vg.Points(8)}
			p.Add(ring)
		}
	}
	if ring != nil && len(front) > 1 {
		p.Legend.Add("on the frontier", ring)
	}
	pad(p, xys, logX)
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.TextStyle.Font.Size = 10
	if len(front) > 1 {
		f.caption += " Circled: on the frontier."
	}
	f.p = p
	return f, nil
}

// pad widens the axes so glyphs fit and the right third stays free for the
// legend.
func pad(p *plot.Plot, xys plotter.XYs, logX bool) {
	const room = 0.64 // the rightmost point at this fraction of the width
	xmin, xmax, ymin, ymax := plotter.XYRange(xys)
	if logX {
		lo := xmin / 1.15
		p.X.Min = lo
		p.X.Max = lo * math.Pow(xmax*1.05/lo, 1/room)
	} else {
		dx := math.Max((xmax-xmin)*0.06, math.Max(1e-9, math.Abs(xmin)*0.05))
		p.X.Min = math.Max(0, xmin-dx)
		p.X.Max = p.X.Min + (xmax+dx-p.X.Min)/room
	}
	dy := (ymax - ymin) * 0.08
	if dy == 0 {
		dy = math.Max(1, math.Abs(ymin)*0.1)
	}
	p.Y.Min, p.Y.Max = ymin-dy, ymax+dy
	if ymin >= 0 {
		p.Y.Min = math.Max(0, p.Y.Min)
	}
}

// decadeTicks labels a log10-transformed axis with the powers of ten.
type decadeTicks struct{}

// Ticks implements plot.Ticker.
func (decadeTicks) Ticks(lo, hi float64) []plot.Tick {
	var t []plot.Tick
	for k := math.Ceil(lo); k <= hi; k++ {
		t = append(t, plot.Tick{Value: k, Label: strconv.FormatFloat(math.Pow(10, k), 'g', -1, 64)})
		for m := 2.0; m < 10; m++ {
			if v := k + math.Log10(m); v <= hi {
				t = append(t, plot.Tick{Value: v})
			}
		}
	}
	return t
}

// bpwTicks marks bits per weight at the usual widths.
type bpwTicks struct{}

// Ticks implements plot.Ticker.
func (bpwTicks) Ticks(lo, hi float64) []plot.Tick {
	var t []plot.Tick
	for _, v := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32} {
		if v >= lo && v <= hi {
			t = append(t, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
		}
	}
	return t
}

// groupedBars draws horizontal bars: one group per experiment (names on the
// Y axis), one bar per series.
func groupedBars(name, title, xl string, names []string, series []string, values [][]float64, caption string) (*figure, error) {
	f := &figure{name: name, title: title, caption: caption}
	if len(names) == 0 {
		f.p = emptyPlot(title, "no experiment has this measurement")
		return f, nil
	}
	p := newPlot(title, xl, "")
	// The first experiment at the top.
	rev := make([]string, len(names))
	for i, n := range names {
		rev[len(names)-1-i] = n
	}
	p.NominalY(rev...)
	p.Y.Min, p.Y.Max = -0.5, float64(len(names))-0.5 // whole groups at both ends
	f.h = vg.Length(math.Max(float64(figH), float64(vg.Inch)*(1.6+0.45*float64(len(names)))))
	groupH := (f.h - 1.6*vg.Inch) / vg.Length(len(names)) * 0.8
	barW := groupH / vg.Length(len(series))
	for s, sn := range series {
		vs := make(plotter.Values, len(names))
		for i := range names {
			v := values[s][len(names)-1-i]
			if math.IsNaN(v) {
				v = 0
			}
			vs[i] = v
		}
		b, err := plotter.NewBarChart(vs, barW)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		b.Horizontal = true
		b.Color = OkabeIto[[]int{4, 0, 2, 5, 1, 6, 3, 7}[s%8]]
		b.LineStyle.Width = 0
		b.Offset = (vg.Length(len(series)-1)/2 - vg.Length(s)) * barW
		p.Add(b)
		p.Legend.Add(sn, b)
	}
	p.Legend.Top = true
	p.Legend.Left = false
	p.X.Min = 0
	var top float64
	for _, vs := range values {
		for _, v := range vs {
			if !math.IsNaN(v) {
				top = math.Max(top, v)
			}
		}
	}
	if top > 0 {
		p.X.Max = top * 1.45 // the legend sits right of the longest bar
	}
	p.Y.Tick.Label.Font.Size = 10
	f.p = p
	return f, nil
}

// memoryBars shows weights, KV cache at kvCtx tokens and peak memory in MB.
func memoryBars(rows []Row, kvCtx int) (*figure, error) {
	var names []string
	vals := make([][]float64, 3)
	for _, r := range rows {
		if r.Bench == nil {
			continue
		}
		m := r.Bench.Memory
		names = append(names, r.Name())
		vals[0] = append(vals[0], float64(m.WeightBytes)/1e6)
		vals[1] = append(vals[1], float64(m.KVBytesPerToken)*float64(kvCtx)/1e6)
		vals[2] = append(vals[2], float64(m.PeakBytes)/1e6)
	}
	return groupedBars("memory", "Memory", "megabytes (MB)", names,
		[]string{"weights", fmt.Sprintf("KV cache, %d tokens", kvCtx), "peak (process RSS or device)"}, vals,
		fmt.Sprintf("Weight bytes as loaded, the KV cache of one %d-token sequence, and the peak memory measured during the benchmark.", kvCtx))
}

// ttftBars shows time to first token per prompt length.
func ttftBars(rows []Row) (*figure, error) {
	lens := map[int]bool{}
	for _, r := range rows {
		if r.Bench != nil {
			for _, t := range r.Bench.TTFT {
				lens[t.PromptTokens] = true
			}
		}
	}
	var ls []int
	for l := range lens {
		ls = append(ls, l)
	}
	sort.Ints(ls)
	var names, series []string
	for _, l := range ls {
		series = append(series, fmt.Sprintf("%d-token prompt", l))
	}
	vals := make([][]float64, len(ls))
	for _, r := range rows {
		if r.Bench == nil || len(r.Bench.TTFT) == 0 {
			continue
		}
		names = append(names, r.Name())
		for k, l := range ls {
			v := math.NaN()
			for _, t := range r.Bench.TTFT {
				if t.PromptTokens == l {
					v = 1e3 * t.Seconds
				}
			}
			vals[k] = append(vals[k], v)
		}
	}
	return groupedBars("ttft", "Time to first token (batch 1)", "milliseconds (ms), median of repeats", names, series, vals,
		"Prefill time of one prompt until the first generated token, per prompt length; warm-up excluded, medians of the repeats.")
}

// latencyBars shows decode latency percentiles at batch 1.
func latencyBars(rows []Row) (*figure, error) {
	var names []string
	vals := make([][]float64, 3)
	for _, r := range rows {
		if r.Bench == nil || r.Bench.Decode == nil {
			continue
		}
		d := r.Bench.Decode
		names = append(names, r.Name())
		vals[0] = append(vals[0], d.P50Ms)
		vals[1] = append(vals[1], d.P90Ms)
		vals[2] = append(vals[2], d.P99Ms)
	}
	return groupedBars("decode_latency", "Per-token decode latency (batch 1)", "milliseconds per token (ms)", names, []string{"p50", "p90", "p99"}, vals,
		"Time of one decode step of a single sequence: percentiles within each run, medians over the runs.")
}

// throughputLines draws decode tokens/s against batch size, one line per
// experiment, on log-log axes.
func throughputLines(rows []Row, colour map[string]int) (*figure, error) {
	const title = "Decode throughput vs batch size"
	f := &figure{name: "throughput", title: title,
		caption: "Generated tokens per second of all sequences together at each batch size (log-log); medians of the repeats."}
	p := newPlot(title, "batch size (sequences, log scale)", "tokens per second (log scale)")
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	batches := map[float64]bool{}
	n := 0
	for _, r := range rows {
		if r.Bench == nil || len(r.Bench.Throughput) == 0 {
			continue
		}
		var xys plotter.XYs
		for _, t := range r.Bench.Throughput {
			if t.Batch > 0 && t.TokensPerSec > 0 {
				xys = append(xys, plotter.XY{X: float64(t.Batch), Y: t.TokensPerSec})
				batches[float64(t.Batch)] = true
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("throughput: %w", err)
		}
		c, g := style(colour[r.Name()])
		l.Color, l.Width = c, vg.Points(1.5)
		s.GlyphStyle = draw.GlyphStyle{Color: c, Shape: g, Radius: vg.Points(4)}
		p.Add(l, s)
		p.Legend.Add(r.Name(), l, s)
		n++
	}
	if n == 0 {
		f.p = emptyPlot(title, "no experiment has this measurement")
		return f, nil
	}
	var ticks []plot.Tick
	for b := range batches {
		ticks = append(ticks, plot.Tick{Value: b, Label: fmt.Sprint(b)})
	}
	sort.Slice(ticks, func(i, j int) bool { return ticks[i].Value < ticks[j].Value })
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Min, p.X.Max = ticks[0].Value/1.3, ticks[len(ticks)-1].Value*1.3
	p.Legend.Top, p.Legend.Left = true, true
	f.p = p
	return f, nil
}
