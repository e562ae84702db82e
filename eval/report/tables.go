package report

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"math"
	"qllama/internal/atomicfile"
	"sort"
	"strconv"
)

// table is one CSV table of the report.
type table struct {
	file   string // e.g. "summary.csv"
	title  string
	header []string
	rows   [][]string
}

func (t *table) writeCSV(path string) error {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(t.header)
	w.WriteAll(t.rows)
	if err := w.Error(); err != nil {
		return fmt.Errorf("csv %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, buf.Bytes())
}

// num formats v with prec decimals; "" for NaN (missing).
func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return ""
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return ""
}

// frontSet returns which rows are on the Pareto front of get.
func frontSet(rows []Row, get func(Row) (cost, value float64, ok bool)) map[string]bool {
	var pts []Point
	var names []string
	for _, r := range rows {
		c, v, ok := get(r)
		if !ok || math.IsNaN(c) || math.IsNaN(v) {
			continue
		}
		pts = append(pts, Point{c, v})
		names = append(names, r.Name())
	}
	out := map[string]bool{}
	for _, i := range ParetoFront(pts) {
		out[names[i]] = true
	}
	return out
}

// Fronts are the Pareto sets the report marks, by experiment name.
type Fronts struct {
	F1BPW, EMBPW, F1Size, KLBPW map[string]bool
}

// ComputeFronts returns the Pareto sets of the finished experiments.
func ComputeFronts(rows []Row) Fronts {
	var ok []Row
	for _, r := range rows {
		if r.OK && r.Convert != nil {
			ok = append(ok, r)
		}
	}
	has := func(r Row) bool { return r.CoQA != nil }
	return Fronts{
		F1BPW:  frontSet(ok, func(r Row) (float64, float64, bool) { return r.LinearBPW(), coqaF1(r), has(r) }),
		EMBPW:  frontSet(ok, func(r Row) (float64, float64, bool) { return r.LinearBPW(), coqaEM(r), has(r) }),
		F1Size: frontSet(ok, func(r Row) (float64, float64, bool) { return r.FileMB(), coqaF1(r), has(r) }),
		KLBPW: frontSet(ok, func(r Row) (float64, float64, bool) {
			if r.PPL == nil {
				return 0, 0, false
			}
			return r.LinearBPW(), -r.PPL.KLMean, true
		}),
	}
}

func buildTables(rows []Row, opt Options) []*table {
	fr := ComputeFronts(rows)
	nan := math.NaN()
	summary := &table{file: "summary.csv", title: "Every experiment",
		header: []string{"experiment", "status", "settings", "seed_study", "scheme", "linear_bpw", "file_bpw", "file_mb",
			"coqa_f1", "coqa_em", "coqa_n", "coqa_protocol", "kl_mean", "ppl", "top1_agree",
			"decode_p50_ms", "tokens_per_s_batch1", "peak_mb", "error"}}
	acc := &table{file: "accuracy.csv", title: "Accuracy, size and divergence (Pareto: on the frontier)",
		header: []string{"experiment", "linear_bpw", "file_bpw", "file_mb", "coqa_f1", "coqa_em", "kl_mean", "kl_p99", "ppl",
			"pareto_f1_bpw", "pareto_em_bpw", "pareto_f1_size", "pareto_kl_bpw"}}
	mem := &table{file: "memory.csv", title: "Memory",
		header: []string{"experiment", "weight_mb", "kv_bytes_per_token", fmt.Sprintf("kv_mb_at_%d", opt.KVContext), "peak_mb", "peak_kind"}}
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
	lat := &table{file: "latency.csv", title: "Latency (ms, medians of repeats)", header: []string{"experiment"}}
	for _, l := range ls {
		lat.header = append(lat.header, fmt.Sprintf("ttft_ms_%d", l))
	}
	lat.header = append(lat.header, "decode_p50_ms", "decode_p90_ms", "decode_p99_ms")
	thr := &table{file: "throughput.csv", title: "Decode throughput",
		header: []string{"experiment", "batch", "tokens_per_s", "step_ms", "avg_watts", "joules_per_token"}}

	for _, r := range rows {
		e := r.Experiment
		f1, em, n, proto := nan, nan, "", ""
		if r.CoQA != nil {
			f1, em, n, proto = r.CoQA.F1, r.CoQA.EM, strconv.Itoa(r.CoQA.N), r.CoQA.Protocol
		}
		kl, klp99, ppl, top1 := nan, nan, nan, nan
		if r.PPL != nil {
			kl, klp99, ppl, top1 = r.PPL.KLMean, r.PPL.KLP99, r.PPL.PPL, r.PPL.Top1Agree
		}
		scheme, lbpw, fbpw, fmb := "", nan, nan, nan
		if r.Convert != nil {
			scheme, lbpw, fbpw, fmb = r.Convert.Scheme, r.Convert.LinearBPW, r.Convert.FileBPW, r.FileMB()
		}
		p50, tps1, peak := nan, nan, nan
		if b := r.Bench; b != nil {
			if b.Decode != nil {
				p50 = b.Decode.P50Ms
			}
			for _, t := range b.Throughput {
				if t.Batch == 1 {
					tps1 = t.TokensPerSec
				}
			}
			peak = float64(b.Memory.PeakBytes) / 1e6
		}
		summary.rows = append(summary.rows, []string{r.Name(), r.Status, settings(e), e.SeedStudy, scheme, num(lbpw, 3), num(fbpw, 3), num(fmb, 2),
			num(f1, 4), num(em, 4), n, proto, num(kl, 5), num(ppl, 3), num(top1, 4), num(p50, 3), num(tps1, 2), num(peak, 1), firstLine(r.Error)})
		if !r.OK {
			continue
		}
		acc.rows = append(acc.rows, []string{r.Name(), num(lbpw, 3), num(fbpw, 3), num(fmb, 2), num(f1, 4), num(em, 4), num(kl, 5), num(klp99, 5), num(ppl, 3),
			yes(fr.F1BPW[r.Name()]), yes(fr.EMBPW[r.Name()]), yes(fr.F1Size[r.Name()]), yes(fr.KLBPW[r.Name()])})
		b := r.Bench
		if b == nil {
			continue
		}
		m := b.Memory
		mem.rows = append(mem.rows, []string{r.Name(), num(float64(m.WeightBytes)/1e6, 2), strconv.FormatInt(m.KVBytesPerToken, 10),
			num(float64(m.KVBytesPerToken)*float64(opt.KVContext)/1e6, 2), num(float64(m.PeakBytes)/1e6, 1), m.PeakKind})
		row := []string{r.Name()}
		for _, l := range ls {
			v := nan
			for _, t := range b.TTFT {
				if t.PromptTokens == l {
					v = 1e3 * t.Seconds
				}
			}
			row = append(row, num(v, 3))
		}
		if d := b.Decode; d != nil {
			row = append(row, num(d.P50Ms, 3), num(d.P90Ms, 3), num(d.P99Ms, 3))
		} else {
			row = append(row, "", "", "")
		}
		lat.rows = append(lat.rows, row)
		for _, t := range b.Throughput {
			w, j := nan, nan
			if t.AvgWatts > 0 {
				w, j = t.AvgWatts, t.JoulesPerToken
			}
			thr.rows = append(thr.rows, []string{r.Name(), strconv.Itoa(t.Batch), num(t.TokensPerSec, 2), num(t.StepMs, 3), num(w, 1), num(j, 4)})
		}
	}
	return []*table{summary, acc, mem, lat, thr}
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
