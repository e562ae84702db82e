package sweep

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"qllama/eval/bench"
)

// fake is a pipeline whose steps append "start"/"done" lines to a log file
// (shared with a child process) and can be made to fail, panic or block.
type fake struct {
	log     string
	mu      sync.Mutex
	fail    map[string]string // "exp/step" -> error text; "panic" panics
	block   string            // "exp/step" that blocks until its context ends
	started chan struct{}     // closed when the blocking step starts
}

func (f *fake) note(j Job, step, what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fh, err := os.OpenFile(f.log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(fh, "%s %s %s\n", j.Experiment.Name, step, what)
	fh.Close()
}

func (f *fake) step(ctx context.Context, j Job, step string) error {
	f.note(j, step, "start")
	key := j.Experiment.Name + "/" + step
	if msg, ok := f.fail[key]; ok {
		if msg == "panic" {
			panic("fake " + key)
		}
		return errors.New(msg)
	}
	if key == f.block {
		if f.started != nil {
			close(f.started)
		}
		if os.Getenv("SWEEP_READY") != "" {
			os.WriteFile(os.Getenv("SWEEP_READY"), nil, 0o644)
		}
		<-ctx.Done()
		return ctx.Err()
	}
	f.note(j, step, "done")
	return nil
}

func (f *fake) pipeline() Pipeline {
	return Pipeline{
		Convert: func(ctx context.Context, j Job) (*ConvertResult, error) {
			if err := f.step(ctx, j, StepConvert); err != nil {
				return nil, err
			}
			if err := os.WriteFile(j.Model, []byte("model "+j.Experiment.Name), 0o644); err != nil {
				return nil, err
			}
			return &ConvertResult{Scheme: j.Experiment.Method, FileBytes: 100, Params: 200, FileBPW: 4, LinearBPW: 4}, nil
		},
		CoQA: func(ctx context.Context, j Job) (*CoQAScore, error) {
			if err := f.step(ctx, j, StepCoQA); err != nil {
				return nil, err
			}
			return &CoQAScore{Protocol: "lmeval", N: 3, F1: 0.5, EM: 0.25}, nil
		},
		Bench: func(ctx context.Context, j Job) (*bench.Result, error) {
			if err := f.step(ctx, j, StepBench); err != nil {
				return nil, err
			}
			return &bench.Result{Memory: bench.Memory{WeightBytes: 100}}, nil
		},
	}
}

// counts reads the log: how often each "exp step what" line occurs.
func counts(t *testing.T, path string) map[string]int {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	c := map[string]int{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		c[sc.Text()]++
	}
	return c
}

func testExperiments(n int) []Experiment {
	exps := make([]Experiment, n)
	for i := range exps {
		exps[i] = Experiment{Name: fmt.Sprintf("e%d", i), Method: "rtn", Bits: 2 + i}
	}
	return exps
}

// checkAllOnce asserts every experiment has an ok result and every step
// finished exactly once over all runs.
func checkAllOnce(t *testing.T, out, log string, exps []Experiment) {
	t.Helper()
	c := counts(t, log)
	for _, e := range exps {
		r, err := ReadResult(filepath.Join(out, e.Name, ResultFile))
		if err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		if r.Status != StatusOK || r.Convert == nil || r.CoQA == nil || r.Bench == nil {
			t.Errorf("%s: result %+v", e.Name, r)
		}
		for _, st := range []string{StepConvert, StepCoQA, StepBench} {
			if n := c[e.Name+" "+st+" done"]; n != 1 {
				t.Errorf("%s %s finished %d times, want once", e.Name, st, n)
			}
		}
		if _, err := os.Stat(filepath.Join(out, e.Name, lockFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: lock left behind (%v)", e.Name, err)
		}
		if _, err := os.Stat(filepath.Join(out, e.Name, ModelFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: model kept without KeepModels", e.Name)
		}
	}
	res, err := ReadResults(out)
	if err != nil || len(res) != len(exps) {
		t.Errorf("ReadResults: %d results, %v", len(res), err)
	}
}

func TestRunFailuresAndRerun(t *testing.T) {
	out, log := t.TempDir(), filepath.Join(t.TempDir(), "log")
	f := &fake{log: log, fail: map[string]string{"e1/coqa": "out of memory", "e2/convert": "panic"}}
	exps := testExperiments(4)
	var progress strings.Builder
	sum, err := Run(context.Background(), exps, f.pipeline(), Options{Out: out, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sum.Done, []string{"e0", "e3"}) || !slices.Equal(sum.Failed, []string{"e1", "e2"}) {
		t.Errorf("summary %+v", sum)
	}
	r1, _ := ReadResult(filepath.Join(out, "e1", ResultFile))
	if r1.Status != StatusFailed || r1.FailedStep != StepCoQA || r1.Error != "out of memory" || r1.Convert == nil {
		t.Errorf("e1 = %+v", r1)
	}
	r2, _ := ReadResult(filepath.Join(out, "e2", ResultFile))
	if r2.Status != StatusFailed || !strings.Contains(r2.Error, "panicked: fake e2/convert") {
		t.Errorf("e2 = %+v", r2)
	}
	if !strings.Contains(progress.String(), "e1: FAILED in coqa: out of memory") || !strings.Contains(progress.String(), "ETA") {
		t.Errorf("progress:\n%s", progress.String())
	}

	// A re-run skips everything, failures included.
	sum, err = Run(context.Background(), exps, f.pipeline(), Options{Out: out})
	if err != nil || len(sum.Skipped) != 4 || len(sum.Done)+len(sum.Failed) != 0 {
		t.Errorf("re-run: %+v, %v", sum, err)
	}
	// Retrying failures after the fault is gone redoes only them, and e1
	// resumes after its finished convert step.
	f.fail = nil
	sum, err = Run(context.Background(), exps, f.pipeline(), Options{Out: out, RetryFailed: true})
	if err != nil || !slices.Equal(sum.Done, []string{"e1", "e2"}) {
		t.Errorf("retry: %+v, %v", sum, err)
	}
	r1, _ = ReadResult(filepath.Join(out, "e1", ResultFile))
	if !slices.Equal(r1.Resumed, []string{StepConvert}) {
		t.Errorf("e1 resumed %v, want [convert]", r1.Resumed)
	}
	checkAllOnce(t, out, log, exps)

	// Changed settings are redone.
	exps[0].Eval.Limit = 7
	sum, err = Run(context.Background(), exps, f.pipeline(), Options{Out: out})
	if err != nil || !slices.Equal(sum.Done, []string{"e0"}) {
		t.Errorf("changed e0: %+v, %v", sum, err)
	}
}

func TestRunCancelledMidExperiment(t *testing.T) {
	out, log := t.TempDir(), filepath.Join(t.TempDir(), "log")
	f := &fake{log: log, block: "e1/coqa", started: make(chan struct{})}
	exps := testExperiments(3)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-f.started; cancel() }()
	sum, err := Run(ctx, exps, f.pipeline(), Options{Out: out})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want cancelled", err)
	}
	if !slices.Equal(sum.Done, []string{"e0"}) || len(sum.Failed) != 0 {
		t.Errorf("interrupted run: %+v", sum)
	}
	if _, err := os.Stat(filepath.Join(out, "e1", ResultFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("an interrupted experiment has a result")
	}
	f.block = ""
	sum, err = Run(context.Background(), exps, f.pipeline(), Options{Out: out})
	if err != nil || !slices.Equal(sum.Done, []string{"e1", "e2"}) || !slices.Equal(sum.Skipped, []string{"e0"}) {
		t.Fatalf("resumed run: %+v, %v", sum, err)
	}
	checkAllOnce(t, out, log, exps)
}

// TestRunKilledProcess kills a sweep process with SIGKILL in the middle of an
// experiment (its lock stays behind), then finishes the sweep here.
func TestRunKilledProcess(t *testing.T) {
	if os.Getenv("SWEEP_CHILD") != "" {
		childSweep()
		return
	}
	out, tmp := t.TempDir(), t.TempDir()
	log, ready := filepath.Join(tmp, "log"), filepath.Join(tmp, "ready")
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunKilledProcess$")
	cmd.Env = append(os.Environ(), "SWEEP_CHILD=1", "SWEEP_OUT="+out, "SWEEP_LOG="+log, "SWEEP_READY="+ready)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child never reached the blocking step; stderr:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(out, "e2", lockFile)); err != nil {
		t.Fatalf("the killed sweep left no lock on e2: %v", err)
	}
	exps := testExperiments(4)
	f := &fake{log: log}
	var progress strings.Builder
	sum, err := Run(context.Background(), exps, f.pipeline(), Options{Out: out, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sum.Skipped, []string{"e0", "e1"}) || !slices.Equal(sum.Done, []string{"e2", "e3"}) {
		t.Errorf("summary %+v", sum)
	}
	if !strings.Contains(progress.String(), "which is gone") {
		t.Errorf("no stale-lock takeover in:\n%s", progress.String())
	}
	r2, _ := ReadResult(filepath.Join(out, "e2", ResultFile))
	if r2 == nil || !slices.Equal(r2.Resumed, []string{StepConvert, StepCoQA}) {
		t.Errorf("e2 did not resume at bench: %+v", r2)
	}
	checkAllOnce(t, out, log, exps)
}

func childSweep() {
	f := &fake{log: os.Getenv("SWEEP_LOG"), block: "e2/bench"}
	Run(context.Background(), testExperiments(4), f.pipeline(), Options{Out: os.Getenv("SWEEP_OUT")})
	os.Exit(3) // never reached: the parent kills us
}

func TestLocks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, lockFile)
	host, _ := os.Hostname()
	// Held by a live process on this host (our parent): busy.
	os.WriteFile(path, []byte(fmt.Sprintf(`{"host":%q,"pid":%d}`, host, os.Getppid())), 0o644)
	_, err := acquireLock(path, time.Hour)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.Owner.PID != os.Getppid() {
		t.Fatalf("live lock: err = %v", err)
	}
	// The same lock, not refreshed for longer than staleAfter: taken over.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(path, old, old)
	lk, err := acquireLock(path, time.Minute)
	if err != nil || !strings.Contains(lk.tookOver, "not refreshed") {
		t.Fatalf("stale lock: %v, %+v", err, lk)
	}
	// The heartbeat keeps it fresh.
	os.Chtimes(path, old, old)
	stop := lk.heartbeat(5 * time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	stop()
	if st, _ := os.Stat(path); time.Since(st.ModTime()) > time.Minute {
		t.Error("heartbeat did not refresh the lock")
	}
	lk.release()
	// Another host's fresh lock is busy; its pid means nothing here.
	os.WriteFile(path, []byte(`{"host":"elsewhere","pid":1}`), 0o644)
	if _, err := acquireLock(path, time.Hour); !errors.As(err, &busy) {
		t.Errorf("other host: err = %v", err)
	}
	// Busy experiments are skipped by Run, not failed.
	out := t.TempDir()
	os.MkdirAll(filepath.Join(out, "e0"), 0o755)
	os.WriteFile(filepath.Join(out, "e0", lockFile), []byte(`{"host":"elsewhere","pid":1}`), 0o644)
	f := &fake{log: filepath.Join(t.TempDir(), "log")}
	sum, err := Run(context.Background(), testExperiments(2), f.pipeline(), Options{Out: out})
	if err != nil || !slices.Equal(sum.Busy, []string{"e0"}) || !slices.Equal(sum.Done, []string{"e1"}) {
		t.Errorf("busy: %+v, %v", sum, err)
	}
}

func TestShardsShareOneDirectory(t *testing.T) {
	out, log := t.TempDir(), filepath.Join(t.TempDir(), "log")
	exps := testExperiments(5)
	f := &fake{log: log}
	var wg sync.WaitGroup
	for k := 0; k < 2; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := Run(context.Background(), Shard{k, 2}.Of(exps), f.pipeline(), Options{Out: out, GPUs: []int{0, 1}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	checkAllOnce(t, out, log, exps)
}

func TestRunErrors(t *testing.T) {
	if _, err := Run(context.Background(), nil, Pipeline{}, Options{Out: t.TempDir()}); err == nil {
		t.Error("no convert step: no error")
	}
	f := &fake{log: filepath.Join(t.TempDir(), "log")}
	if _, err := Run(context.Background(), nil, f.pipeline(), Options{}); err == nil {
		t.Error("no results directory: no error")
	}
	if _, err := ReadResults(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing results directory: no error")
	}
	bad := t.TempDir()
	os.MkdirAll(filepath.Join(bad, "x"), 0o755)
	os.WriteFile(filepath.Join(bad, "x", ResultFile), []byte("{"), 0o644)
	if _, err := ReadResults(bad); err == nil || !strings.Contains(err.Error(), "x/result.json") {
		t.Errorf("corrupt result: %v", err)
	}
}
