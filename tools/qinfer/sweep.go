package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"qllama/convert"
	"qllama/eval/bench"
	"qllama/eval/coqa"
	"qllama/eval/ppl"
	"qllama/eval/sweep"
	"qllama/internal/atomicfile"
)

func sweepCommand() *cli.Command {
	return &cli.Command{
		Name:      "sweep",
		Usage:     "run a study: convert, evaluate (CoQA; perplexity and KL with --ppl-text) and benchmark each experiment of experiments.toml",
		UsageText: "qinfer sweep --experiments experiments.toml --model-dir HF_DIR --coqa FILE --out DIR [--only A,B] [--quick] [--limit N] [--gpus 0,1] [--shard K/N]",
		Description: "Writes DIR/NAME/result.json per experiment (atomically) and the step files it was built from. A re-run\n" +
			"skips finished experiments and resumes cut-short ones at their first missing step; a failed experiment\n" +
			"is recorded with its error (--retry-failed redoes it). Each experiment is locked while it runs (pid and\n" +
			"host in DIR/NAME/lock, refreshed every 30 s); a lock whose process is gone, or older than 10 minutes, is\n" +
			"taken over. --shard K/N runs every N-th experiment from the K-th (0-based), so N machines (a Slurm array,\n" +
			"a Kubernetes indexed Job) can share one results directory.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "experiments", Aliases: []string{"e"}, Value: "experiments.toml", Usage: "experiment registry"},
			&cli.StringFlag{Name: "model-dir", Required: true, Usage: "the Hugging Face model directory every experiment converts (and the reference for KL)"},
			&cli.StringFlag{Name: "coqa", Usage: "CoQA v1.0 JSON file (the dev set, or one written by 'qinfer coqa-synth'); without it CoQA is skipped"},
			&cli.StringFlag{Name: "ppl-text", Usage: "text file for perplexity and KL divergence against --model-dir (both on --device); without it they are skipped"},
			&cli.IntFlag{Name: "ppl-ctx", Usage: "perplexity window length in tokens (overrides experiments.toml; 0: keep)"},
			&cli.IntFlag{Name: "ppl-windows", Usage: "perplexity windows per experiment (overrides experiments.toml; 0: keep)"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true, Usage: "results directory"},
			&cli.StringFlag{Name: "only", Usage: "comma-separated experiment names"},
			&cli.BoolFlag{Name: "quick", Usage: "only the registry's quick set"},
			&cli.IntFlag{Name: "limit", Usage: "CoQA stories per experiment (overrides experiments.toml; 0: keep)"},
			&cli.StringFlag{Name: "gpus", Usage: "one worker per listed GPU, e.g. 0,1 (default: one CPU worker)"},
			&cli.StringFlag{Name: "shard", Usage: "K/N: run only part K (0-based) of N of the selected experiments"},
			&cli.StringSliceFlag{Name: "calib", Usage: "calibration text for gptq/awq: NAME=FILE for the dataset NAME of experiments.toml, or FILE for every dataset (repeatable)"},
			&cli.IntFlag{Name: "calib-samples", Usage: "calibration windows of gptq/awq experiments (overrides experiments.toml; small values for CPU smoke runs)"},
			&cli.IntFlag{Name: "calib-len", Usage: "calibration window length in tokens (overrides experiments.toml)"},
			&cli.BoolFlag{Name: "retry-failed", Usage: "redo experiments recorded as failed"},
			&cli.BoolFlag{Name: "keep-models", Usage: "keep each converted model file (DIR/NAME/model.gguf) after its experiment"},
			&cli.IntFlag{Name: "threads", Usage: "CPU threads (default: all cores)"},
			deviceFlag(),
			kvCacheFlag(),
			&cli.StringFlag{Name: "nvml", Value: "auto", Usage: "record each worker's GPU with NVML: auto, on or off"},
			&cli.BoolFlag{Name: "no-bench", Usage: "skip the benchmark step"},
		}, benchFlags("bench-")...),
		Action: runSweep,
	}
}

func coqaSynthCommand() *cli.Command {
	return &cli.Command{
		Name:  "coqa-synth",
		Usage: "write a small synthetic CoQA-format dataset (for demos and tests without downloads)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "stories", Value: 16, Usage: "stories to generate"},
			&cli.Int64Flag{Name: "seed", Value: 1, Usage: "the same seed always writes the same file"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true, Usage: "CoQA v1.0 JSON file to write"},
			&cli.StringFlag{Name: "text", Usage: "also write the stories as plain text here (for --ppl-text)"},
		},
		Action: func(c *cli.Context) error {
			n := c.Int("stories")
			if n < 1 || n > 100000 {
				return fmt.Errorf("--stories %d: want 1..100000", n)
			}
			ds := coqa.Synthesize(c.Int64("seed"), n)
			if err := coqa.WriteDataset(c.String("out"), ds); err != nil {
				return err
			}
			if t := c.String("text"); t != "" {
				var b strings.Builder
				for _, s := range ds.Stories {
					b.WriteString(s.Story)
					b.WriteString("\n\n")
				}
				if err := atomicfile.WriteFile(t, []byte(b.String())); err != nil {
					return err
				}
			}
			fmt.Fprintf(c.App.ErrWriter, "wrote %s: %d stories, %d questions\n", c.String("out"), len(ds.Stories), ds.Turns())
			return nil
		},
	}
}

// parseGPUs parses "0,1" (empty: none, meaning one CPU worker).
func parseGPUs(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	seen := map[int]bool{}
	for _, f := range strings.Split(s, ",") {
		g, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || g < 0 || seen[g] {
			return nil, fmt.Errorf("--gpus %q: want distinct GPU indices separated by commas, e.g. 0,1", s)
		}
		seen[g] = true
		out = append(out, g)
	}
	return out, nil
}

func runSweep(c *cli.Context) error {
	reg, err := sweep.LoadRegistry(c.String("experiments"))
	if err != nil {
		return err
	}
	var only []string
	if s := c.String("only"); s != "" {
		only = strings.Split(s, ",")
	}
	exps, err := reg.Select(only, c.Bool("quick"))
	if err != nil {
		return err
	}
	shard, err := sweep.ParseShard(c.String("shard"))
	if err != nil {
		return fmt.Errorf("--shard: %w", err)
	}
	exps = shard.Of(exps)
	if len(exps) == 0 {
		fmt.Fprintf(c.App.ErrWriter, "sweep: shard %d/%d has no experiments\n", shard.K, shard.N)
		return nil
	}
	gpus, err := parseGPUs(c.String("gpus"))
	if err != nil {
		return err
	}
	dev, err := pickDevice(c.String("device"))
	if err != nil {
		return err
	}
	if dev == "cuda" && len(gpus) == 0 {
		gpus = []int{0}
	}
	if lim := c.Int("limit"); lim < 0 {
		return fmt.Errorf("--limit %d: must not be negative", lim)
	} else if lim > 0 {
		for i := range exps {
			exps[i].Eval.Limit = lim
		}
	}
	pc, pw := c.Int("ppl-ctx"), c.Int("ppl-windows")
	if pc < 0 || pw < 0 {
		return fmt.Errorf("--ppl-ctx and --ppl-windows must not be negative")
	}
	if pc > 0 && pc < ppl.MinCtx {
		return fmt.Errorf("--ppl-ctx %d: must be at least %d", pc, ppl.MinCtx)
	}
	for i := range exps {
		if pc > 0 {
			exps[i].Eval.PPLCtx = pc
		}
		if pw > 0 {
			exps[i].Eval.PPLWindows = pw
		}
	}
	cs, cl := c.Int("calib-samples"), c.Int("calib-len")
	if cs < 0 || cl < 0 {
		return fmt.Errorf("--calib-samples and --calib-len must not be negative")
	}
	for i := range exps {
		if cal := &exps[i].Calibration; cal.Dataset != "" {
			if cs > 0 {
				cal.Samples = cs
			}
			if cl > 0 {
				cal.SeqLen = cl
			}
		}
	}
	var bo bench.Options
	if err := benchOptions(c, "bench-", &bo); err != nil {
		return err
	}
	for i := range exps {
		b := &exps[i].Bench
		if bo.Prompts != nil {
			b.Prompts = bo.Prompts
		}
		if bo.Batches != nil {
			b.Batches = bo.Batches
		}
		if bo.Context > 0 {
			b.Context = bo.Context
		}
		if bo.DecodeTokens > 0 {
			b.DecodeTokens = bo.DecodeTokens
		}
		if bo.Repeats > 0 {
			b.Repeats = bo.Repeats
		}
	}
	st, err := newStudy(c, exps, dev)
	if err != nil {
		return err
	}
	defer st.close()
	sum, err := sweep.Run(c.Context, exps, st.pipeline(), sweep.Options{
		Out: c.String("out"), GPUs: gpus, RetryFailed: c.Bool("retry-failed"), KeepModels: c.Bool("keep-models"), Progress: c.App.ErrWriter,
	})
	if err != nil {
		return err
	}
	if len(sum.Failed) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "sweep: failed (see DIR/NAME/result.json): %s\n", strings.Join(sum.Failed, ", "))
	}
	return nil
}

// study holds what every experiment of a sweep shares.
type study struct {
	c        *cli.Context
	modelDir string
	coqaPath string
	ds       *coqa.Dataset
	pplText  string
	pplIDs   []int
	calib    map[string]string // dataset name -> file; "" -> file for any
	threads  int
	nvml     string
	device   string // cpu or cuda: where CoQA, perplexity and the benchmark run
	kv       string // --kv-cache for the experiments' models (the reference keeps its default)

	refOnce sync.Once
	ref     *loaded
	refErr  error
	refMu   sync.Mutex
	refGPU  map[int]*backend // the reference on each worker's GPU (--device cuda)
}

func newStudy(c *cli.Context, exps []sweep.Experiment, device string) (*study, error) {
	st := &study{c: c, modelDir: c.String("model-dir"), coqaPath: c.String("coqa"), pplText: c.String("ppl-text"),
		calib: map[string]string{}, threads: c.Int("threads"), nvml: c.String("nvml"), device: device, refGPU: map[int]*backend{}}
	if fi, err := os.Stat(st.modelDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("--model-dir %s: not a directory (%v)", st.modelDir, err)
	}
	kv, err := pickKVCache(c.String("kv-cache"), device)
	if err != nil {
		return nil, err
	}
	st.kv = kv
	if _, err := openProbe(st.nvml, 0); err != nil && st.nvml == "on" {
		return nil, err
	}
	for _, s := range c.StringSlice("calib") {
		name, file, ok := strings.Cut(s, "=")
		if !ok {
			name, file = "", s
		}
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("--calib %s: %w", s, err)
		}
		st.calib[name] = file
	}
	for _, e := range exps {
		if e.Method == convert.MethodGPTQ || e.Method == convert.MethodAWQ {
			if _, err := st.calibFile(e); err != nil {
				fmt.Fprintf(c.App.ErrWriter, "sweep: warning: %v\n", err)
			}
		}
	}
	if st.coqaPath != "" {
		ds, err := coqa.Load(st.coqaPath)
		if err != nil {
			return nil, fmt.Errorf("--coqa: %w", err)
		}
		st.ds = ds
	}
	if st.pplText != "" {
		text, err := os.ReadFile(st.pplText)
		if err != nil {
			return nil, fmt.Errorf("--ppl-text: %w", err)
		}
		tok, err := openTokenizer(st.modelDir)
		if err != nil {
			return nil, err
		}
		st.pplIDs = tok.Encode(string(text), false)
	}
	return st, nil
}

func (st *study) close() {
	for _, b := range st.refGPU {
		b.close()
	}
	if st.ref != nil {
		st.ref.Close()
	}
}

// calibFile finds the calibration text of e: --calib NAME=FILE, a dataset
// that is itself a file, or --calib FILE.
func (st *study) calibFile(e sweep.Experiment) (string, error) {
	d := e.Calibration.Dataset
	if f, ok := st.calib[d]; ok && d != "" {
		return f, nil
	}
	if d != "" {
		if fi, err := os.Stat(d); err == nil && !fi.IsDir() {
			return d, nil
		}
	}
	if f, ok := st.calib[""]; ok {
		return f, nil
	}
	return "", fmt.Errorf("experiment %s calibrates on %q: pass --calib %s=FILE (plain text or JSONL with a \"text\" field)", e.Name, d, orName(d))
}

func orName(d string) string {
	if d == "" {
		return "NAME"
	}
	return d
}

// reference loads the --model-dir model once, for KL divergence.
func (st *study) reference() (*loaded, error) {
	st.refOnce.Do(func() { st.ref, st.refErr = openRef(st.c, st.modelDir) })
	return st.ref, st.refErr
}

// refScorer places the reference on the device of worker gpu: a CPU runner
// over the shared model (a new one per call, so workers never share one), or,
// with --device cuda, one upload per GPU kept for the whole sweep (each GPU
// has one worker, which runs one job at a time).
func (st *study) refScorer(gpu int) (ppl.Scorer, error) {
	ref, err := st.reference()
	if err != nil {
		return nil, err
	}
	if st.device != "cuda" {
		return ppl.CPU(ref.model), nil
	}
	st.refMu.Lock()
	defer st.refMu.Unlock()
	if b, ok := st.refGPU[gpu]; ok {
		return b.scorer, nil
	}
	b, err := openBackend(st.device, gpu, ref, bench.ModelInfo{})
	if err != nil {
		return nil, err
	}
	st.refGPU[gpu] = b
	return b.scorer, nil
}

func (st *study) pipeline() sweep.Pipeline {
	p := sweep.Pipeline{Convert: st.convert}
	if st.ds != nil {
		p.CoQA = st.coqa
	}
	if st.pplIDs != nil {
		p.PPL = st.ppl
	}
	if !st.c.Bool("no-bench") {
		p.Bench = st.bench
	}
	return p
}

// convertOptions maps an experiment onto the converter's options.
func (st *study) convertOptions(e sweep.Experiment, out string) (convert.Options, error) {
	o := convert.Options{In: st.modelDir, Out: out, Method: e.Method, Bits: e.Bits, Group: e.Group, Sym: e.Sym, DoubleQuant: e.DoubleQuant,
		Type: e.Type, EmbedType: e.EmbedType, HeadType: e.HeadType, Threads: st.threads}
	for k, v := range e.Params {
		switch k {
		case "act_order":
			b, ok := v.(bool)
			if !ok {
				return o, fmt.Errorf("params.act_order = %v: want true or false", v)
			}
			o.ActOrder = b
		case "reference_qk":
			b, ok := v.(bool)
			if !ok {
				return o, fmt.Errorf("params.reference_qk = %v: want true or false", v)
			}
			o.AWQReferenceQK = b
		default:
			return o, fmt.Errorf("params.%s: the converter has no such setting (known: act_order, reference_qk)", k)
		}
	}
	if e.Method == convert.MethodGPTQ || e.Method == convert.MethodAWQ {
		f, err := st.calibFile(e)
		if err != nil {
			return o, err
		}
		o.Calib, o.CalibSamples, o.CalibLen = f, e.Calibration.Samples, e.Calibration.SeqLen
		o.CalibSeed = uint64(e.Calibration.Seed)
	}
	return o, nil
}

func (st *study) convert(ctx context.Context, j sweep.Job) (*sweep.ConvertResult, error) {
	o, err := st.convertOptions(j.Experiment, j.Model)
	if err != nil {
		return nil, err
	}
	calibrated := o.Method == convert.MethodGPTQ || o.Type == convert.MethodGPTQ || o.Method == convert.MethodAWQ || o.Type == convert.MethodAWQ
	if st.device == "cuda" && calibrated {
		gptqRun, awqRun, release, err := cudaCalib(j.GPU)
		if err != nil {
			return nil, err
		}
		defer release()
		o.GPTQ, o.AWQ = gptqRun, awqRun
	}
	rep, err := convert.Convert(ctx, o)
	if err != nil {
		return nil, err
	}
	cr := &sweep.ConvertResult{FileBytes: rep.FileBytes, Params: rep.Params, LinearBPW: rep.LinearBPW, FileBPW: rep.FileBPW,
		Seconds: rep.Seconds, LlamaCpp: rep.LlamaCpp, Scheme: rep.Method}
	for _, t := range rep.Tensors {
		if t.Class == convert.ClassLinear && cr.Scheme == rep.Method {
			cr.Scheme = t.Type
		}
		if t.Fallback != "" {
			cr.Fallbacks++
		}
	}
	return cr, nil
}

func (st *study) coqa(ctx context.Context, j sweep.Job) (*sweep.CoQAScore, error) {
	l, err := openGGUF(j.Model)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	e := j.Experiment.Eval
	info := describe(l)
	l.kv = st.kv
	b, err := openBackend(st.device, j.GPU, l, bench.ModelInfo{})
	if err != nil {
		return nil, err
	}
	defer b.close()
	mi := &coqa.ModelInfo{Path: l.path, Format: info.Format + " " + info.DType, Backend: b.name, KVCache: b.target.Info().KVCache}
	if info.Params > 0 {
		mi.BPW = 8 * float64(info.WeightBytes) / float64(info.Params)
	}
	opt := coqa.Options{Protocol: e.Protocol, Limit: e.Limit, MaxGenTokens: e.MaxGenTokens, MaxPositionEmbeddings: l.model.MaxSeq, Model: mi, DatasetPath: st.coqaPath}
	if opt.Protocol == "" {
		opt.Protocol = coqa.ProtocolLMEval
	}
	gen := &coqaGenerator{g: b.gen, tok: l.tok, batch: max(1, e.Batch)}
	res, err := coqa.Run(ctx, st.ds, newCoQATokenizer(l.tok), gen, opt)
	if err != nil {
		return nil, err
	}
	if err := res.WriteJSON(filepath.Join(j.Dir, "coqa-predictions.json")); err != nil {
		return nil, err
	}
	sc := &sweep.CoQAScore{Protocol: res.Protocol, N: res.N, Limit: res.Limit, F1: res.F1, EM: res.EM, Dataset: st.coqaPath}
	if t := res.Timings; t != nil {
		sc.Seconds, sc.GenTokensPerSec = t.WallSeconds, t.GenTokensPerSec
	}
	return sc, nil
}

func (st *study) ppl(ctx context.Context, j sweep.Job) (*sweep.PPLScore, error) {
	ref, err := st.refScorer(j.GPU)
	if err != nil {
		return nil, fmt.Errorf("reference %s: %w", st.modelDir, err)
	}
	l, err := openGGUF(j.Model)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	l.kv = st.kv
	b, err := openBackend(st.device, j.GPU, l, bench.ModelInfo{})
	if err != nil {
		return nil, err
	}
	defer b.close()
	e := j.Experiment.Eval
	opt := ppl.Options{Ctx: e.PPLCtx, MaxWindows: e.PPLWindows, AddBOS: l.tok.Parts().AddBOS && l.tok.BOS() >= 0, BOS: l.tok.BOS(), Ref: ref}
	if opt.Ctx == 0 {
		opt.Ctx = min(ppl.DefaultCtx, l.model.MaxSeq)
	}
	if len(st.pplIDs) < 2*opt.Ctx {
		// A short demo text: windows of a quarter of it, so several are scored.
		opt.Ctx = max(ppl.MinCtx, min(opt.Ctx, len(st.pplIDs)/4))
	}
	res, err := ppl.Evaluate(ctx, b.scorer, st.pplIDs, opt)
	if err != nil {
		return nil, fmt.Errorf("--ppl-text %s: %w", st.pplText, err)
	}
	sc := &sweep.PPLScore{PPL: res.PPL, PPLStderr: res.PPLStderr, Tokens: res.Tokens, Ref: st.modelDir}
	if k := res.KL; k != nil {
		sc.RefPPL, sc.KLMean, sc.KLMedian, sc.KLP99, sc.Top1Agree = k.RefPPL, k.Mean, k.Median, k.P99, k.Top1Agree
	}
	return sc, nil
}

func (st *study) bench(ctx context.Context, j sweep.Job) (*bench.Result, error) {
	l, err := openGGUF(j.Model)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	b := j.Experiment.Bench
	opt := bench.Options{Prompts: b.Prompts, Batches: b.Batches, Context: b.Context, DecodeTokens: b.DecodeTokens, Repeats: b.Repeats}
	info := describe(l)
	l.kv = st.kv
	be, err := openBackend(st.device, j.GPU, l, bench.ModelInfo{Path: l.path, Format: info.Format + " " + info.DType, Params: info.Params, WeightBytes: info.WeightBytes})
	if err != nil {
		return nil, err
	}
	defer be.close()
	if j.GPU >= 0 {
		if nv, _ := openProbe(st.nvml, j.GPU); nv != nil {
			defer nv.Close()
			opt.Device = probe(nv, be)
		}
	}
	// Prompts beyond the context are skipped by bench.Run with a warning.
	return bench.Run(ctx, be.target, opt)
}
