// Package sweep runs a study: named experiments (quantization method and
// parameters, evaluation protocol, benchmark settings) read from an
// experiments.toml registry, each converted, evaluated and benchmarked
// through a Pipeline of plain functions, one result JSON per experiment.
//
// A sweep is resumable and shareable. Each experiment has a directory in the
// results directory; every finished step leaves an atomically written JSON
// file there, and the experiment's result.json is written last. A lock file
// holding the owner's host and pid (refreshed while it works) keeps two
// workers off one experiment; a lock whose process is gone, or that has not
// been refreshed for StaleAfter, is taken over. Re-running a sweep therefore
// skips finished experiments, resumes cut-short ones at the first missing
// step, and redoes nothing twice. Shards (K/N) split the experiments
// deterministically so many machines can share one results directory.
package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"qllama/eval/bench"
	"qllama/internal/atomicfile"
	"qllama/internal/progress"
)

// Status values of a Result.
const (
	StatusOK     = "ok"
	StatusFailed = "failed"
)

// Step names, also the names of their files in an experiment's directory.
const (
	StepConvert = "convert"
	StepCoQA    = "coqa"
	StepPPL     = "ppl"
	StepBench   = "bench"
)

// ResultFile is the name of an experiment's final result in its directory.
const ResultFile = "result.json"

// ModelFile is the name of the converted model in an experiment's directory.
const ModelFile = "model.gguf"

// Job is one experiment given to a worker.
type Job struct {
	Experiment Experiment
	Dir        string // the experiment's directory in the results directory
	Model      string // the converted model file (Dir/ModelFile)
	Worker     int    // 0-based worker index
	GPU        int    // the worker's GPU, -1 on the CPU
}

// ConvertResult summarises a conversion.
type ConvertResult struct {
	Scheme    string  `json:"scheme"` // e.g. "nf4 b64", "rtn int3 g128 asym"
	FileBytes int64   `json:"file_bytes"`
	Params    int64   `json:"params"`
	LinearBPW float64 `json:"linear_bpw"` // bits per weight of the linear layers
	FileBPW   float64 `json:"file_bpw"`   // 8 * file bytes / params
	Seconds   float64 `json:"seconds"`
	LlamaCpp  bool    `json:"llama_cpp_compatible"`
	Fallbacks int     `json:"fallbacks,omitempty"` // tensors stored in another format than asked
}

// CoQAScore is the CoQA outcome of an experiment.
type CoQAScore struct {
	Protocol        string  `json:"protocol"`
	N               int     `json:"n"` // questions scored
	Limit           int     `json:"limit"`
	F1              float64 `json:"f1"`
	EM              float64 `json:"em"`
	Seconds         float64 `json:"seconds"`
	GenTokensPerSec float64 `json:"generated_tokens_per_s,omitempty"`
	Dataset         string  `json:"dataset,omitempty"`
}

// PPLScore is the perplexity and divergence from the reference model.
type PPLScore struct {
	PPL       float64 `json:"ppl"`
	PPLStderr float64 `json:"ppl_stderr"`
	RefPPL    float64 `json:"ref_ppl,omitempty"`
	KLMean    float64 `json:"kl_mean"`
	KLMedian  float64 `json:"kl_median"`
	KLP99     float64 `json:"kl_p99"`
	Top1Agree float64 `json:"top1_agree"`
	Tokens    int     `json:"tokens"`
	Ref       string  `json:"ref,omitempty"`
}

// Pipeline is what a sweep does to each experiment. Convert is required;
// a nil CoQA, PPL or Bench step is skipped.
type Pipeline struct {
	Convert func(ctx context.Context, j Job) (*ConvertResult, error)
	CoQA    func(ctx context.Context, j Job) (*CoQAScore, error)
	PPL     func(ctx context.Context, j Job) (*PPLScore, error)
	Bench   func(ctx context.Context, j Job) (*bench.Result, error)
}

// Result is one experiment's result.json.
type Result struct {
	Name        string         `json:"name"`
	Experiment  Experiment     `json:"experiment"`
	Fingerprint string         `json:"fingerprint"`
	Status      string         `json:"status"`
	Error       string         `json:"error,omitempty"`
	FailedStep  string         `json:"failed_step,omitempty"`
	Convert     *ConvertResult `json:"convert,omitempty"`
	CoQA        *CoQAScore     `json:"coqa,omitempty"`
	PPL         *PPLScore      `json:"ppl,omitempty"`
	Bench       *bench.Result  `json:"bench,omitempty"`
	Host        string         `json:"host,omitempty"`
	GPU         int            `json:"gpu"`
	Started     string         `json:"started"`
	Finished    string         `json:"finished"`
	Seconds     float64        `json:"seconds"` // this attempt's wall time
	Resumed     []string       `json:"resumed,omitempty"`
}

// Options configure Run.
type Options struct {
	// Out is the results directory (created if missing).
	Out string
	// GPUs lists the GPU of each worker; empty means one CPU worker.
	GPUs []int
	// RetryFailed redoes experiments whose result records a failure.
	RetryFailed bool
	// KeepModels keeps each converted model after its experiment finished.
	KeepModels bool
	// Heartbeat is how often a worker refreshes its lock (default 30 s);
	// StaleAfter is how old a lock may be before another worker takes it
	// over (default 10 minutes).
	Heartbeat, StaleAfter time.Duration
	// Progress receives the progress display and one line per event.
	Progress io.Writer
}

// Summary is what a Run did.
type Summary struct {
	Done    []string // finished in this run
	Failed  []string // recorded as failed in this run
	Skipped []string // already finished before
	Busy    []string // locked by a live worker elsewhere
}

// Run runs the experiments through p. It returns when every experiment is
// finished, failed (recorded, the sweep goes on), or held by another worker;
// or with ctx's error when cancelled, leaving cut-short experiments to be
// resumed by the next run.
func Run(ctx context.Context, exps []Experiment, p Pipeline, opt Options) (*Summary, error) {
	if p.Convert == nil {
		return nil, errors.New("sweep: the pipeline has no convert step")
	}
	if opt.Out == "" {
		return nil, errors.New("sweep: no results directory")
	}
	if opt.Heartbeat <= 0 {
		opt.Heartbeat = 30 * time.Second
	}
	if opt.StaleAfter <= 0 {
		opt.StaleAfter = 10 * time.Minute
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("sweep: %w", err)
	}
	gpus := opt.GPUs
	if len(gpus) == 0 {
		gpus = []int{-1}
	}
	s := &sweeper{p: p, opt: opt, sum: &Summary{}, start: time.Now()}
	var todo []Experiment
	for _, e := range exps {
		if r, err := ReadResult(filepath.Join(opt.Out, e.Name, ResultFile)); err == nil && r.Fingerprint == e.Fingerprint() &&
			(r.Status == StatusOK || !opt.RetryFailed) {
			s.sum.Skipped = append(s.sum.Skipped, e.Name)
			continue
		}
		todo = append(todo, e)
	}
	s.logf("sweep: %d experiments, %d already finished, %d to run on %d worker(s)", len(exps), len(s.sum.Skipped), len(todo), len(gpus))
	s.total = len(todo)
	s.bar = progress.New(opt.Progress, int64(len(todo)), "experiments", progress.Options{Every: time.Nanosecond})

	jobs := make(chan Experiment)
	var wg sync.WaitGroup
	for w, gpu := range gpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range jobs {
				s.runOne(ctx, e, w, gpu)
			}
		}()
	}
feed:
	for _, e := range todo {
		select {
		case jobs <- e:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	s.bar.Finish()
	sort.Strings(s.sum.Done)
	sort.Strings(s.sum.Failed)
	if err := ctx.Err(); err != nil {
		return s.sum, fmt.Errorf("sweep interrupted (re-run to resume): %w", err)
	}
	s.logf("sweep: %d done, %d failed, %d already finished, %d busy elsewhere (%s)",
		len(s.sum.Done), len(s.sum.Failed), len(s.sum.Skipped), len(s.sum.Busy), time.Since(s.start).Round(time.Second))
	return s.sum, nil
}

type sweeper struct {
	p     Pipeline
	opt   Options
	start time.Time
	bar   *progress.Bar
	total int

	mu       sync.Mutex
	sum      *Summary
	finished int
	spent    time.Duration // wall time of finished experiments
}

func (s *sweeper) logf(format string, args ...any) {
	if s.opt.Progress != nil {
		s.mu.Lock()
		fmt.Fprintf(s.opt.Progress, format+"\n", args...)
		s.mu.Unlock()
	}
}

// eta estimates the time left from the mean time of finished experiments.
func (s *sweeper) eta() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished == 0 {
		return "ETA unknown"
	}
	workers := max(1, len(s.opt.GPUs))
	left := s.total - s.finished
	per := s.spent / time.Duration(s.finished)
	return "ETA " + (per * time.Duration(left) / time.Duration(workers)).Round(time.Second).String()
}

// runOne runs one experiment under its lock.
func (s *sweeper) runOne(ctx context.Context, e Experiment, worker, gpu int) {
	if ctx.Err() != nil {
		return
	}
	dir := filepath.Join(s.opt.Out, e.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.record(e, dir, gpu, time.Now(), nil, "", fmt.Errorf("create %s: %w", dir, err))
		return
	}
	lk, err := acquireLock(filepath.Join(dir, lockFile), s.opt.StaleAfter)
	if err != nil {
		var busy *BusyError
		if errors.As(err, &busy) {
			s.logf("%s: %v; skipped", e.Name, err)
			s.mu.Lock()
			s.sum.Busy = append(s.sum.Busy, e.Name)
			s.mu.Unlock()
			return
		}
		s.record(e, dir, gpu, time.Now(), nil, "", err)
		return
	}
	defer lk.release()
	if lk.tookOver != "" {
		s.logf("%s: %s; redoing what it left unfinished", e.Name, lk.tookOver)
	}
	stop := lk.heartbeat(s.opt.Heartbeat)
	defer stop()
	// A result may have appeared while we waited for the lock.
	if r, err := ReadResult(filepath.Join(dir, ResultFile)); err == nil && r.Fingerprint == e.Fingerprint() && (r.Status == StatusOK || !s.opt.RetryFailed) {
		s.mu.Lock()
		s.sum.Skipped = append(s.sum.Skipped, e.Name)
		s.mu.Unlock()
		return
	}

	start := time.Now()
	j := Job{Experiment: e, Dir: dir, Model: filepath.Join(dir, ModelFile), Worker: worker, GPU: gpu}
	res := &Result{}
	step, err := s.steps(ctx, j, res)
	if ctx.Err() != nil {
		s.logf("%s: interrupted during %s", e.Name, step)
		return
	}
	s.record(e, dir, gpu, start, res, step, err)
	if err == nil && !s.opt.KeepModels {
		os.Remove(j.Model)
	}
}

// steps runs the pipeline, reusing step files of an earlier attempt made with
// the same settings; it returns the step that failed.
func (s *sweeper) steps(ctx context.Context, j Job, res *Result) (string, error) {
	fp := j.Experiment.Fingerprint()
	if _, err := os.Stat(j.Model); err != nil {
		// Without the model, later steps cannot be trusted to match it.
		for _, st := range []string{StepConvert, StepCoQA, StepPPL, StepBench} {
			os.Remove(stepPath(j.Dir, st))
		}
	}
	if err := runStep(ctx, s, j, fp, StepConvert, &res.Convert, res, s.p.Convert); err != nil {
		return StepConvert, err
	}
	if s.p.CoQA != nil {
		if err := runStep(ctx, s, j, fp, StepCoQA, &res.CoQA, res, s.p.CoQA); err != nil {
			return StepCoQA, err
		}
	}
	if s.p.PPL != nil {
		if err := runStep(ctx, s, j, fp, StepPPL, &res.PPL, res, s.p.PPL); err != nil {
			return StepPPL, err
		}
	}
	if s.p.Bench != nil {
		if err := runStep(ctx, s, j, fp, StepBench, &res.Bench, res, s.p.Bench); err != nil {
			return StepBench, err
		}
	}
	return "", nil
}

// stepFile is what a finished step leaves in the experiment's directory.
type stepFile[T any] struct {
	Fingerprint string `json:"fingerprint"`
	Output      *T     `json:"output"`
}

func stepPath(dir, step string) string { return filepath.Join(dir, step+".json") }

// runStep reuses the step's file when it matches fp, else runs fn (a panic
// becomes an error) and writes the file.
func runStep[T any](ctx context.Context, s *sweeper, j Job, fp, step string, dst **T, res *Result, fn func(context.Context, Job) (*T, error)) (err error) {
	path := stepPath(j.Dir, step)
	if data, err := os.ReadFile(path); err == nil {
		var sf stepFile[T]
		if json.Unmarshal(data, &sf) == nil && sf.Fingerprint == fp && sf.Output != nil {
			*dst = sf.Output
			res.Resumed = append(res.Resumed, step)
			return nil
		}
	}
	s.logf("%s: %s (gpu %d, %s)", j.Experiment.Name, step, j.GPU, s.eta())
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s panicked: %v\n%s", step, r, debug.Stack())
		}
	}()
	out, err := fn(ctx, j)
	if err != nil {
		return err
	}
	if out == nil {
		return fmt.Errorf("%s returned no result", step)
	}
	data, err := json.MarshalIndent(stepFile[T]{Fingerprint: fp, Output: out}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s result: %w", step, err)
	}
	if err := atomicfile.WriteFile(path, append(data, '\n')); err != nil {
		return err
	}
	*dst = out
	return nil
}

// record writes the experiment's result.json (ok, or failed with err).
func (s *sweeper) record(e Experiment, dir string, gpu int, start time.Time, res *Result, step string, err error) {
	if res == nil {
		res = &Result{}
	}
	res.Name, res.Experiment, res.Fingerprint, res.GPU = e.Name, e, e.Fingerprint(), gpu
	res.Host, _ = os.Hostname()
	res.Started, res.Finished = start.UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339)
	res.Seconds = time.Since(start).Seconds()
	res.Status = StatusOK
	if err != nil {
		res.Status, res.Error, res.FailedStep = StatusFailed, err.Error(), step
	}
	werr := res.WriteJSON(filepath.Join(dir, ResultFile))
	s.mu.Lock()
	s.finished++
	s.spent += time.Since(start)
	if err != nil || werr != nil {
		s.sum.Failed = append(s.sum.Failed, e.Name)
	} else {
		s.sum.Done = append(s.sum.Done, e.Name)
	}
	s.mu.Unlock()
	s.bar.Add(1)
	switch {
	case werr != nil:
		s.logf("%s: FAILED to write its result: %v", e.Name, werr)
	case err != nil:
		s.logf("%s: FAILED in %s: %v (%s)", e.Name, step, firstLine(err.Error()), s.eta())
	default:
		s.logf("%s: done in %s (%s)", e.Name, time.Since(start).Round(time.Millisecond), s.eta())
	}
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}

// WriteJSON writes r to path atomically.
func (r *Result) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, append(data, '\n'))
}

// ReadResult reads one result.json.
func ReadResult(path string) (*Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("result %s: %w", path, err)
	}
	if r.Name == "" {
		return nil, fmt.Errorf("result %s: no experiment name", path)
	}
	return &r, nil
}

// ReadResults reads every DIR/*/result.json, sorted by name.
func ReadResults(dir string) ([]*Result, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*", ResultFile))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("results: %w", err)
		}
		return nil, fmt.Errorf("results %s: no */%s files", dir, ResultFile)
	}
	sort.Strings(paths)
	var out []*Result
	for _, p := range paths {
		r, err := ReadResult(p)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
