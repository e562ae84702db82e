package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"qllama/format/safetensors"
)

// File names inside a Hugging Face model directory.
const (
	ConfigFile           = "config.json"
	SafetensorsFile      = "model.safetensors"
	SafetensorsIndexFile = "model.safetensors.index.json"
	TokenizerConfigFile  = "tokenizer_config.json"
	GenerationConfigFile = "generation_config.json"
)

// maxJSONFile caps the size of the JSON files read whole (configs, index).
const maxJSONFile = 64 << 20

// ErrNotFound is wrapped by errors about a tensor the model does not hold.
var ErrNotFound = safetensors.ErrNotFound

// Model is an opened Hugging Face Llama model directory. Its shards stay
// memory-mapped until Close; raw slices from [Model.Tensor] are invalid after.
type Model struct {
	Dir    string
	Config *Config

	files   []*safetensors.File          // every shard, in name order
	tensors map[string]*safetensors.File // tensor name -> shard holding it
	extra   []string
	dtype   safetensors.DType
}

// Open reads dir/config.json, maps dir/model.safetensors or every shard
// listed in dir/model.safetensors.index.json, and checks that every tensor
// of [Config.ExpectedTensors] is present with the expected shape and a float
// dtype (F32, F16 or BF16). lm_head.weight may be absent only when embeddings
// are tied. Tensors the model does not use are recorded (see [Model.Extra]),
// not rejected; rotary_emb.inv_freq buffers are ignored.
func Open(dir string) (_ *Model, err error) {
	cfgPath := filepath.Join(dir, ConfigFile)
	data, err := readJSONFile(cfgPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (is %s a Hugging Face model directory? it needs config.json, *.safetensors and tokenizer.json)", err, dir)
	}
	if err != nil {
		return nil, err
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("hf: %s: %w", cfgPath, err)
	}
	m := &Model{Dir: dir, Config: cfg, tensors: make(map[string]*safetensors.File)}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()

	indexPath := filepath.Join(dir, SafetensorsIndexFile)
	switch _, serr := os.Stat(indexPath); {
	case serr == nil:
		if err := m.openSharded(indexPath); err != nil {
			return nil, err
		}
	case errors.Is(serr, os.ErrNotExist):
		f, err := safetensors.Open(filepath.Join(dir, SafetensorsFile))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("hf: %s: neither %s nor %s found: %w", dir, SafetensorsFile, SafetensorsIndexFile, err)
		}
		if err != nil {
			return nil, fmt.Errorf("hf: %w", err)
		}
		m.files = append(m.files, f)
		for _, t := range f.Tensors() {
			m.tensors[t.Name] = f
		}
	default:
		return nil, fmt.Errorf("hf: %w", serr)
	}

	if err := m.validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// shardIndex mirrors model.safetensors.index.json.
type shardIndex struct {
	WeightMap map[string]string `json:"weight_map"`
}

// openSharded opens every shard named by the index and maps tensors to them.
func (m *Model) openSharded(indexPath string) error {
	data, err := readJSONFile(indexPath)
	if err != nil {
		return err
	}
	var idx shardIndex
	if err := json.Unmarshal(data, &idx); err != nil {
		return fmt.Errorf("hf: %s: invalid JSON: %w", indexPath, err)
	}
	if len(idx.WeightMap) == 0 {
		return fmt.Errorf("hf: %s: weight_map missing or empty", indexPath)
	}
	// Open each shard once, in name order, remembering one tensor it should hold.
	byShard := make(map[string][]string)
	for name, shard := range idx.WeightMap {
		if shard == "" || shard != filepath.Base(shard) || !filepath.IsLocal(shard) {
			return fmt.Errorf("hf: %s: tensor %q maps to %q, which is not a file name in the model directory", indexPath, name, shard)
		}
		byShard[shard] = append(byShard[shard], name)
	}
	shards := make([]string, 0, len(byShard))
	for s := range byShard {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	for _, shard := range shards {
		names := byShard[shard]
		sort.Strings(names)
		f, err := safetensors.Open(filepath.Join(m.Dir, shard))
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("hf: %s: shard %q (holding %q and %d more) is missing: %w", indexPath, shard, names[0], len(names)-1, err)
		}
		if err != nil {
			return fmt.Errorf("hf: %w", err)
		}
		m.files = append(m.files, f)
		for _, name := range names {
			if _, ok := f.Info(name); !ok {
				return fmt.Errorf("hf: %s: maps tensor %q to shard %q, which does not hold it", indexPath, name, shard)
			}
			m.tensors[name] = f
		}
	}
	return nil
}

// validate checks the expected tensors and records the extras and the dtype.
func (m *Model) validate() error {
	expected := m.Config.ExpectedTensors()
	want := make(map[string]bool, len(expected))
	counts := make(map[safetensors.DType]int64)
	for _, e := range expected {
		want[e.Name] = true
		f, ok := m.tensors[e.Name]
		if !ok {
			if e.Optional {
				continue
			}
			if e.Name == LMHeadName {
				return fmt.Errorf("hf: %s: tensor %q missing and tie_word_embeddings is false", m.Dir, e.Name)
			}
			return fmt.Errorf("hf: %s: tensor %q missing", m.Dir, e.Name)
		}
		ti, _ := f.Info(e.Name)
		if !slices.Equal(ti.Shape, e.Shape) {
			return fmt.Errorf("hf: %s: tensor %q has shape %v, but %s implies %v", f.Path(), e.Name, ti.Shape, ConfigFile, e.Shape)
		}
		if !ti.DType.IsFloat() {
			return fmt.Errorf("hf: %s: tensor %q has dtype %s; only F32, F16 and BF16 weights are supported: %w", f.Path(), e.Name, ti.DType, ErrUnsupported)
		}
		counts[ti.DType] += ti.NumElements()
	}
	for name := range m.tensors {
		if want[name] {
			continue
		}
		if _, suffix, ok := ParseLayerTensorName(name); ok && suffix == RotaryInvFreq {
			continue
		}
		m.extra = append(m.extra, name)
	}
	sort.Strings(m.extra)
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16} {
		if counts[dt] > counts[m.dtype] {
			m.dtype = dt
		}
	}
	return nil
}

// readJSONFile reads a JSON file whole, refusing files over maxJSONFile.
func readJSONFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hf: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJSONFile+1))
	if err != nil {
		return nil, fmt.Errorf("hf: %s: %w", path, err)
	}
	if len(data) > maxJSONFile {
		return nil, fmt.Errorf("hf: %s: larger than %d bytes", path, maxJSONFile)
	}
	return data, nil
}

// Names returns every tensor name the model holds, sorted.
func (m *Model) Names() []string {
	names := make([]string, 0, len(m.tensors))
	for n := range m.tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Extra returns the names of tensors the model holds but a Llama forward pass
// does not use, sorted (rotary_emb.inv_freq buffers excluded).
func (m *Model) Extra() []string { return slices.Clone(m.extra) }

// OutputName returns the tensor holding the output projection: lm_head.weight,
// or the embedding when it is tied and lm_head.weight is absent.
func (m *Model) OutputName() string {
	if _, ok := m.tensors[LMHeadName]; !ok && m.Config.TieWordEmbeddings {
		return EmbedName
	}
	return LMHeadName
}

// Info returns the named tensor's description.
func (m *Model) Info(name string) (safetensors.TensorInfo, bool) {
	f, ok := m.tensors[name]
	if !ok {
		return safetensors.TensorInfo{}, false
	}
	return f.Info(name)
}

// Tensor returns the named tensor's description and raw little-endian bytes
// (a slice of the read-only mapping; do not modify it).
func (m *Model) Tensor(name string) (safetensors.TensorInfo, []byte, error) {
	f, ok := m.tensors[name]
	if !ok {
		return safetensors.TensorInfo{}, nil, fmt.Errorf("hf: %s: tensor %q: %w", m.Dir, name, ErrNotFound)
	}
	ti, _ := f.Info(name)
	b, err := f.Data(name)
	if err != nil {
		return ti, nil, fmt.Errorf("hf: %w", err)
	}
	return ti, b, nil
}

// Float32 returns a float32 copy of the named F32, F16 or BF16 tensor,
// row-major in the tensor's shape.
func (m *Model) Float32(name string) ([]float32, error) {
	ti, b, err := m.Tensor(name)
	if err != nil {
		return nil, err
	}
	out := make([]float32, ti.NumElements()) // bounded by the validated file size
	if err := safetensors.ToFloat32(out, b, ti.DType); err != nil {
		return nil, fmt.Errorf("hf: tensor %q: %w", name, err)
	}
	return out, nil
}

// DType returns the dtype holding most weight elements among the expected tensors.
func (m *Model) DType() safetensors.DType { return m.dtype }

// Close unmaps every shard.
func (m *Model) Close() error {
	var errs []error
	for _, f := range m.files {
		errs = append(errs, f.Close())
	}
	m.files = nil
	return errors.Join(errs...)
}
