package sweep

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Experiment is one named configuration of the study: how to quantize the
// model and how to evaluate and benchmark the result.
type Experiment struct {
	Name        string `toml:"name" json:"name"`
	Description string `toml:"description" json:"description,omitempty"`
	// SeedStudy names the configuration of the seed study (Hugging Face
	// transformers + bitsandbytes / AutoGPTQ / AutoAWQ) this one stands for.
	SeedStudy string `toml:"seed_study" json:"seed_study,omitempty"`
	// Method is the quantizer: a convert format (f16, int8, nf4, fp4, rtn,
	// q4_0, iq4_nl, ...) or an algorithm (gptq, awq).
	Method      string `toml:"method" json:"method"`
	Bits        int    `toml:"bits" json:"bits,omitempty"`
	Group       int    `toml:"group" json:"group,omitempty"` // group / absmax block size; -1 per channel
	Sym         bool   `toml:"sym" json:"sym,omitempty"`
	DoubleQuant bool   `toml:"double_quant" json:"double_quant,omitempty"`
	// Type, EmbedType and HeadType override the format of the linear
	// layers, the token embedding and the output head.
	Type      string `toml:"type" json:"type,omitempty"`
	EmbedType string `toml:"embed_type" json:"embed_type,omitempty"`
	HeadType  string `toml:"head_type" json:"head_type,omitempty"`
	// Params holds method-specific settings (GPTQ damp and act_order, AWQ
	// grid, ...), passed to the quantizer as they are.
	Params      map[string]any `toml:"params" json:"params,omitempty"`
	Calibration Calibration    `toml:"calibration" json:"calibration"`
	Eval        EvalSpec       `toml:"eval" json:"eval"`
	Bench       BenchSpec      `toml:"bench" json:"bench"`
	Tags        []string       `toml:"tags" json:"tags,omitempty"`
}

// Calibration is the data a calibrating quantizer (GPTQ, AWQ) sees.
type Calibration struct {
	Dataset string `toml:"dataset" json:"dataset,omitempty"` // a name (c4, wikitext2, pile) or a text file
	Samples int    `toml:"samples" json:"samples,omitempty"`
	SeqLen  int    `toml:"seq_len" json:"seq_len,omitempty"`
	Seed    int64  `toml:"seed" json:"seed,omitempty"`
}

// EvalSpec is the evaluation protocol.
type EvalSpec struct {
	Protocol     string `toml:"protocol" json:"protocol,omitempty"` // CoQA protocol: lmeval or all-turns
	Limit        int    `toml:"limit" json:"limit"`                 // CoQA stories, 0 = all
	MaxGenTokens int    `toml:"max_gen_tokens" json:"max_gen_tokens,omitempty"`
	Batch        int    `toml:"batch" json:"batch,omitempty"`
	PPLCtx       int    `toml:"ppl_ctx" json:"ppl_ctx,omitempty"`         // perplexity window
	PPLWindows   int    `toml:"ppl_windows" json:"ppl_windows,omitempty"` // 0 = all
}

// BenchSpec configures the benchmark step (eval/bench options).
type BenchSpec struct {
	Prompts      []int `toml:"prompts" json:"prompts,omitempty"`
	Batches      []int `toml:"batches" json:"batches,omitempty"`
	Context      int   `toml:"context" json:"context,omitempty"`
	DecodeTokens int   `toml:"decode_tokens" json:"decode_tokens,omitempty"`
	Repeats      int   `toml:"repeats" json:"repeats,omitempty"`
}

// Registry is an experiments.toml file.
type Registry struct {
	Version int `toml:"version"`
	// Quick names the experiments of --quick.
	Quick []string `toml:"quick"`
	// Defaults fills the fields an experiment leaves empty: embed_type,
	// head_type, calibration, eval and bench.
	Defaults    Experiment   `toml:"defaults"`
	Experiments []Experiment `toml:"experiment"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// LoadRegistry reads and validates an experiments file.
func LoadRegistry(path string) (*Registry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("experiments: %w", err)
	}
	r, err := ParseRegistry(data)
	if err != nil {
		return nil, fmt.Errorf("experiments %s: %w", path, err)
	}
	return r, nil
}

// ParseRegistry parses and validates an experiments file's contents and
// applies the defaults to every experiment. Unknown keys are errors.
func ParseRegistry(data []byte) (*Registry, error) {
	var r Registry
	md, err := toml.Decode(string(data), &r)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, 0, len(und))
		for _, k := range und {
			if len(k) >= 3 && k[len(k)-2] == "params" || len(k) >= 2 && k[0] == "defaults" && k[1] == "params" {
				continue
			}
			keys = append(keys, k.String())
		}
		if len(keys) > 0 {
			return nil, fmt.Errorf("unknown keys: %s", strings.Join(keys, ", "))
		}
	}
	if r.Version != 1 {
		return nil, fmt.Errorf("version = %d: this program reads version 1", r.Version)
	}
	if len(r.Experiments) == 0 {
		return nil, errors.New("no [[experiment]] entries")
	}
	seen := map[string]bool{}
	for i := range r.Experiments {
		e := &r.Experiments[i]
		if !nameRE.MatchString(e.Name) {
			return nil, fmt.Errorf("experiment %d: name %q: want lower-case letters, digits, '_', '-' or '.', at most 64", i+1, e.Name)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("experiment %q is defined twice", e.Name)
		}
		seen[e.Name] = true
		if e.Method == "" {
			return nil, fmt.Errorf("experiment %q: method is required", e.Name)
		}
		if e.Bits < 0 || e.Bits > 16 {
			return nil, fmt.Errorf("experiment %q: bits %d out of range", e.Name, e.Bits)
		}
		if e.Group < -1 {
			return nil, fmt.Errorf("experiment %q: group %d: want a size, 0 (default) or -1 (per channel)", e.Name, e.Group)
		}
		r.applyDefaults(e)
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("experiment %q: %w", e.Name, err)
		}
	}
	for _, q := range r.Quick {
		if !seen[q] {
			return nil, fmt.Errorf("quick: no experiment named %q", q)
		}
	}
	return &r, nil
}

func (r *Registry) applyDefaults(e *Experiment) {
	d := &r.Defaults
	if e.EmbedType == "" {
		e.EmbedType = d.EmbedType
	}
	if e.HeadType == "" {
		e.HeadType = d.HeadType
	}
	if e.Calibration == (Calibration{}) {
		e.Calibration = d.Calibration
	}
	ev := &e.Eval
	if ev.Protocol == "" {
		ev.Protocol = d.Eval.Protocol
	}
	if ev.Limit == 0 {
		ev.Limit = d.Eval.Limit
	}
	if ev.MaxGenTokens == 0 {
		ev.MaxGenTokens = d.Eval.MaxGenTokens
	}
	if ev.Batch == 0 {
		ev.Batch = d.Eval.Batch
	}
	if ev.PPLCtx == 0 {
		ev.PPLCtx = d.Eval.PPLCtx
	}
	if ev.PPLWindows == 0 {
		ev.PPLWindows = d.Eval.PPLWindows
	}
	b := &e.Bench
	if len(b.Prompts) == 0 {
		b.Prompts = slices.Clone(d.Bench.Prompts)
	}
	if len(b.Batches) == 0 {
		b.Batches = slices.Clone(d.Bench.Batches)
	}
	if b.Context == 0 {
		b.Context = d.Bench.Context
	}
	if b.DecodeTokens == 0 {
		b.DecodeTokens = d.Bench.DecodeTokens
	}
	if b.Repeats == 0 {
		b.Repeats = d.Bench.Repeats
	}
}

func (e *Experiment) check() error {
	switch {
	case e.Eval.Limit < 0:
		return fmt.Errorf("eval.limit %d is negative", e.Eval.Limit)
	case e.Eval.Batch < 0 || e.Eval.MaxGenTokens < 0 || e.Eval.PPLCtx < 0 || e.Eval.PPLWindows < 0:
		return errors.New("eval: negative batch, max_gen_tokens, ppl_ctx or ppl_windows")
	case e.Bench.Context < 0 || e.Bench.DecodeTokens < 0 || e.Bench.Repeats < 0:
		return errors.New("bench: negative context, decode_tokens or repeats")
	case e.Calibration.Samples < 0 || e.Calibration.SeqLen < 0:
		return errors.New("calibration: negative samples or seq_len")
	}
	if _, err := json.Marshal(e.Params); err != nil {
		return fmt.Errorf("params: %w (NaN and infinities are not allowed)", err)
	}
	for _, v := range append(slices.Clone(e.Bench.Prompts), e.Bench.Batches...) {
		if v <= 0 {
			return fmt.Errorf("bench: prompt lengths and batch sizes must be positive, got %d", v)
		}
	}
	return nil
}

// Lookup returns the experiment called name.
func (r *Registry) Lookup(name string) (*Experiment, bool) {
	for i := range r.Experiments {
		if r.Experiments[i].Name == name {
			return &r.Experiments[i], true
		}
	}
	return nil, false
}

// Select returns the experiments to run in file order: those named in only
// (all when empty), restricted to the quick set when quick is set.
func (r *Registry) Select(only []string, quick bool) ([]Experiment, error) {
	want := map[string]bool{}
	for _, n := range only {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if _, ok := r.Lookup(n); !ok {
			return nil, fmt.Errorf("--only: no experiment named %q (have %s)", n, strings.Join(r.Names(), ", "))
		}
		want[n] = true
	}
	if quick && len(r.Quick) == 0 {
		return nil, errors.New("--quick: the experiments file has no quick list")
	}
	var out []Experiment
	for _, e := range r.Experiments {
		if len(want) > 0 && !want[e.Name] {
			continue
		}
		if quick && !slices.Contains(r.Quick, e.Name) {
			continue
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, errors.New("no experiment selected")
	}
	return out, nil
}

// Names lists the experiments in file order.
func (r *Registry) Names() []string {
	out := make([]string, len(r.Experiments))
	for i, e := range r.Experiments {
		out[i] = e.Name
	}
	return out
}

// Fingerprint identifies the experiment's effective settings: results
// computed under other settings are not reused.
func (e *Experiment) Fingerprint() string {
	data, err := json.Marshal(e)
	if err != nil {
		// Registries reject params that do not marshal; a hand-built
		// experiment still gets a stable fingerprint.
		data = []byte(fmt.Sprintf("%#v", *e))
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// Shard is part K (0-based) of N of a sweep.
type Shard struct{ K, N int }

// ParseShard parses "K/N" with 0 <= K < N; "" is the whole sweep (0/1).
func ParseShard(s string) (Shard, error) {
	if s == "" {
		return Shard{0, 1}, nil
	}
	var sh Shard
	ks, ns, ok := strings.Cut(s, "/")
	k, kerr := strconv.Atoi(ks)
	n, nerr := strconv.Atoi(ns)
	if !ok || kerr != nil || nerr != nil || strings.HasPrefix(ks, "+") || strings.HasPrefix(ns, "+") {
		return sh, fmt.Errorf("shard %q: want K/N with integers, e.g. 0/4", s)
	}
	sh = Shard{K: k, N: n}
	if sh.N < 1 || sh.K < 0 || sh.K >= sh.N {
		return sh, fmt.Errorf("shard %q: want 0 <= K < N", s)
	}
	return sh, nil
}

// Of returns the shard's experiments: every N-th one from the K-th, so N
// shards over the same selection cover it exactly once.
func (s Shard) Of(exps []Experiment) []Experiment {
	var out []Experiment
	for i, e := range exps {
		if i%s.N == s.K {
			out = append(out, e)
		}
	}
	return out
}
