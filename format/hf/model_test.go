package hf

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"qllama/format/safetensors"
	"qllama/internal/testutil"
)

func openShared(t *testing.T, model string) *Model {
	t.Helper()
	m, err := Open(testutil.Shared(t, "models", model))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestOpenReal(t *testing.T) {
	tests := []struct {
		model   string
		config  Config
		dtype   safetensors.DType
		ntensor int
		// a few element values, recomputed from the raw bytes independently
		name string
		idx  []int
	}{
		{"stories260k", stories260kConfig, safetensors.F32, 47, "model.layers.2.mlp.down_proj.weight", []int{0, 1, 4095, 64*172 - 1}},
		{"random_llama32", randomLlama32Config, safetensors.BF16, 20, EmbedName, []int{0, 7, 64*128000 + 3, 128256*64 - 1}},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			m := openShared(t, tc.model)
			if !reflect.DeepEqual(*m.Config, tc.config) {
				t.Errorf("config = %+v", *m.Config)
			}
			if m.DType() != tc.dtype {
				t.Errorf("DType = %s, want %s", m.DType(), tc.dtype)
			}
			if n := len(m.Names()); n != tc.ntensor {
				t.Errorf("%d tensors, want %d", n, tc.ntensor)
			}
			if len(m.Extra()) != 0 {
				t.Errorf("Extra = %v", m.Extra())
			}
			// Tied, lm_head absent: the output projection is the embedding.
			if _, ok := m.Info(LMHeadName); ok || m.OutputName() != EmbedName {
				t.Errorf("lm_head present %v, OutputName %q", ok, m.OutputName())
			}
			var total int64
			for _, e := range m.Config.ExpectedTensors() {
				ti, ok := m.Info(e.Name)
				if !ok {
					continue
				}
				if !slices.Equal(ti.Shape, e.Shape) {
					t.Errorf("%s: shape %v, want %v", e.Name, ti.Shape, e.Shape)
				}
				total += ti.NumElements()
			}
			if total != m.Config.ParamCount() {
				t.Errorf("tensors hold %d parameters, ParamCount %d", total, m.Config.ParamCount())
			}

			ti, raw, err := m.Tensor(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			got, err := m.Float32(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(got)) != ti.NumElements() {
				t.Fatalf("Float32 returned %d values for %d elements", len(got), ti.NumElements())
			}
			nonzero := false
			for _, i := range tc.idx {
				var want float32
				if ti.DType == safetensors.BF16 {
					want = math.Float32frombits(uint32(raw[2*i])<<16 | uint32(raw[2*i+1])<<24)
				} else {
					want = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
				}
				if math.Float32bits(got[i]) != math.Float32bits(want) {
					t.Errorf("%s[%d] = %v, want %v", tc.name, i, got[i], want)
				}
				nonzero = nonzero || want != 0
			}
			if !nonzero {
				t.Errorf("%s: sampled values all zero", tc.name)
			}
			if _, _, err := m.Tensor("model.layers.99.mlp.up_proj.weight"); !errors.Is(err, ErrNotFound) {
				t.Errorf("missing tensor error = %v", err)
			}
		})
	}
}

// The stories260k RMSNorm weights are trained values, not all ones: a guard
// against reading the wrong tensor.
func TestStoriesNormValues(t *testing.T) {
	m := openShared(t, "stories260k")
	w, err := m.Float32(NormName)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, v := range w {
		sum += float64(v)
	}
	if len(w) != 64 || sum == 64 || sum == 0 {
		t.Errorf("model.norm.weight: %d values summing to %g", len(w), sum)
	}
}

// writeModel writes m's tensors into dir as shards safetensors files (plus an
// index when shards > 1) and config as config.json. edit may change a
// tensor before it is written or drop it by returning false.
func writeModel(t *testing.T, m *Model, dir string, shards int, config []byte, edit func(*safetensors.WriteTensor) bool) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), config, 0o644); err != nil {
		t.Fatal(err)
	}
	names := m.Names()
	weightMap := map[string]string{}
	per := (len(names) + shards - 1) / shards
	for s := 0; s < shards; s++ {
		var wts []safetensors.WriteTensor
		file := SafetensorsFile
		if shards > 1 {
			file = "model-0000" + string(rune('1'+s)) + "-of-0000" + string(rune('0'+shards)) + ".safetensors"
		}
		for _, name := range names[s*per : min((s+1)*per, len(names))] {
			ti, raw, err := m.Tensor(name)
			if err != nil {
				t.Fatal(err)
			}
			wt := safetensors.WriteTensor{Name: name, DType: ti.DType, Shape: ti.Shape,
				WriteData: func(w io.Writer) error { _, err := w.Write(raw); return err }}
			if edit != nil && !edit(&wt) {
				continue
			}
			wts = append(wts, wt)
			weightMap[name] = file
		}
		if err := safetensors.Write(context.Background(), filepath.Join(dir, file), wts, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
	}
	if shards > 1 {
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
		if err := os.WriteFile(filepath.Join(dir, SafetensorsIndexFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenSharded(t *testing.T) {
	orig := openShared(t, "stories260k")
	cfg := readShared(t, "models", "stories260k", "config.json")
	dir := t.TempDir()
	writeModel(t, orig, dir, 2, cfg, nil)
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.files) != 2 {
		t.Errorf("%d shards opened, want 2", len(m.files))
	}
	if !reflect.DeepEqual(m.Config, orig.Config) || !slices.Equal(m.Names(), orig.Names()) || m.DType() != orig.DType() {
		t.Fatal("sharded copy differs in config, names or dtype")
	}
	for _, name := range orig.Names() {
		a, ra, _ := orig.Tensor(name)
		b, rb, err := m.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a.Shape, b.Shape) || a.DType != b.DType || !bytes.Equal(ra, rb) {
			t.Errorf("%s differs in the sharded copy", name)
		}
	}
}

func TestOpenUntiedAndExtra(t *testing.T) {
	orig := openShared(t, "stories260k")
	cfg := bytes.Replace(readShared(t, "models", "stories260k", "config.json"),
		[]byte(`"tie_word_embeddings": true`), []byte(`"tie_word_embeddings": false`), 1)
	dir := t.TempDir()
	emb, embRaw, _ := orig.Tensor(EmbedName)
	writeFile(t, dir, ConfigFile, cfg)
	// Untied: lm_head present, plus an inv_freq buffer (ignored) and an unknown tensor (recorded).
	var wts []safetensors.WriteTensor
	for _, name := range orig.Names() {
		ti, raw, _ := orig.Tensor(name)
		wts = append(wts, rawTensor(name, ti.DType, ti.Shape, raw))
	}
	wts = append(wts,
		rawTensor(LMHeadName, emb.DType, emb.Shape, embRaw),
		rawTensor(LayerTensorName(0, RotaryInvFreq), safetensors.F32, []int64{4}, make([]byte, 16)),
		rawTensor("model.mystery", safetensors.U8, []int64{3}, []byte{1, 2, 3}))
	if err := safetensors.Write(context.Background(), filepath.Join(dir, SafetensorsFile), wts, nil); err != nil {
		t.Fatal(err)
	}
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.OutputName() != LMHeadName || m.Config.TieWordEmbeddings {
		t.Errorf("OutputName = %q", m.OutputName())
	}
	if !slices.Equal(m.Extra(), []string{"model.mystery"}) {
		t.Errorf("Extra = %v", m.Extra())
	}
}

func rawTensor(name string, dt safetensors.DType, shape []int64, raw []byte) safetensors.WriteTensor {
	return safetensors.WriteTensor{Name: name, DType: dt, Shape: shape,
		WriteData: func(w io.Writer) error { _, err := w.Write(raw); return err }}
}

func TestOpenErrors(t *testing.T) {
	orig := openShared(t, "stories260k")
	cfg := readShared(t, "models", "stories260k", "config.json")
	goodFile := readShared(t, "models", "stories260k", "model.safetensors")
	hdrLen := binary.LittleEndian.Uint64(goodFile)
	kName := LayerTensorName(0, AttnK)

	// setup writes a broken model directory and returns the path to expect in the error.
	tests := []struct {
		name        string
		setup       func(t *testing.T, dir string)
		want        []string // substrings of the one error
		unsupported bool
	}{
		{"no config", func(t *testing.T, dir string) {}, []string{"config.json: no such file"}, false},
		{"garbage config", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, []byte("\x00garbage{"))
			writeFile(t, dir, SafetensorsFile, goodFile)
		}, []string{"config.json", "invalid config JSON"}, false},
		{"unsupported rope", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, bytes.Replace(cfg, []byte(`"rope_scaling": null`), []byte(`"rope_scaling": {"rope_type": "yarn", "factor": 4.0}`), 1))
			writeFile(t, dir, SafetensorsFile, goodFile)
		}, []string{"config.json", `rope_scaling type "yarn"`}, true},
		{"no weights", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, cfg)
		}, []string{"neither model.safetensors nor model.safetensors.index.json found"}, false},
		{"truncated safetensors", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, cfg)
			writeFile(t, dir, SafetensorsFile, goodFile[:len(goodFile)-1000])
		}, []string{"model.safetensors", "out of bounds", "truncated file?"}, false},
		{"header length past file", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, cfg)
			writeFile(t, dir, SafetensorsFile, goodFile[:8+hdrLen-1])
		}, []string{"model.safetensors", "header length 4848 past end of the 4855-byte file"}, false},
		{"lying header out of bounds", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, cfg)
			writeFile(t, dir, SafetensorsFile, patchHeader(t, goodFile, `"data_offsets":[1039872,1040128]`, `"data_offsets":[9039872,9040128]`))
		}, []string{"model.safetensors", `tensor "model.norm.weight": data_offsets [9039872, 9040128] out of bounds of the 1040128-byte data section`}, false},
		{"lying header overlap", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, cfg)
			writeFile(t, dir, SafetensorsFile, patchHeader(t, goodFile, `"data_offsets":[131072,131328]`, `"data_offsets":[131000,131256]`))
		}, []string{"model.safetensors", `overlaps tensor "model.embed_tokens.weight"`}, false},
		{"lying header wrong length", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, cfg)
			writeFile(t, dir, SafetensorsFile, patchHeader(t, goodFile, `"shape":[64],"data_offsets":[131072,131328]`, `"shape":[65],"data_offsets":[131072,131328]`))
		}, []string{"model.safetensors", "hold 256 bytes, but shape [65] of F32 needs 260"}, false},
		{"unknown dtype", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, cfg)
			writeFile(t, dir, SafetensorsFile, patchHeader(t, goodFile, `"dtype":"F32","shape":[64],"data_offsets":[131072,131328]`, `"dtype":"F31","shape":[64],"data_offsets":[131072,131328]`))
		}, []string{"model.safetensors", `unknown dtype "F31"`}, true},
		{"integer weights", func(t *testing.T, dir string) {
			writeModel(t, orig, dir, 1, cfg, func(wt *safetensors.WriteTensor) bool {
				if wt.Name == NormName {
					wt.DType = safetensors.I32
				}
				return true
			})
		}, []string{"model.safetensors", `tensor "model.norm.weight" has dtype I32`}, true},
		{"missing shard", func(t *testing.T, dir string) {
			writeModel(t, orig, dir, 2, cfg, nil)
			os.Remove(filepath.Join(dir, "model-00002-of-00002.safetensors"))
		}, []string{"model.safetensors.index.json", `shard "model-00002-of-00002.safetensors"`, "is missing"}, false},
		{"index names missing tensor", func(t *testing.T, dir string) {
			writeModel(t, orig, dir, 2, cfg, func(wt *safetensors.WriteTensor) bool { return wt.Name != NormName })
			addToIndex(t, dir, NormName, "model-00002-of-00002.safetensors")
		}, []string{"model.safetensors.index.json", `maps tensor "model.norm.weight" to shard "model-00002-of-00002.safetensors", which does not hold it`}, false},
		{"index escapes directory", func(t *testing.T, dir string) {
			writeModel(t, orig, dir, 2, cfg, nil)
			addToIndex(t, dir, NormName, "../model.safetensors")
		}, []string{`"../model.safetensors", which is not a file name in the model directory`}, false},
		{"index garbage", func(t *testing.T, dir string) {
			writeModel(t, orig, dir, 2, cfg, nil)
			writeFile(t, dir, SafetensorsIndexFile, []byte(`{"weight_map": [1]}`))
		}, []string{"model.safetensors.index.json: invalid JSON"}, false},
		{"missing tensor", func(t *testing.T, dir string) {
			writeModel(t, orig, dir, 1, cfg, func(wt *safetensors.WriteTensor) bool { return wt.Name != kName })
		}, []string{`tensor "model.layers.0.self_attn.k_proj.weight" missing`}, false},
		{"wrong shape vs config", func(t *testing.T, dir string) {
			writeModel(t, orig, dir, 1, cfg, func(wt *safetensors.WriteTensor) bool {
				if wt.Name == kName {
					wt.Shape = []int64{64, 32}
				}
				return true
			})
		}, []string{"model.safetensors", `tensor "model.layers.0.self_attn.k_proj.weight" has shape [64 32], but config.json implies [32 64]`}, false},
		{"config disagrees with weights", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, bytes.Replace(cfg, []byte(`"num_key_value_heads": 4`), []byte(`"num_key_value_heads": 8`), 1))
			writeFile(t, dir, SafetensorsFile, goodFile)
		}, []string{`tensor "model.layers.0.self_attn.k_proj.weight" has shape [32 64], but config.json implies [64 64]`}, false},
		{"untied without lm_head", func(t *testing.T, dir string) {
			writeFile(t, dir, ConfigFile, bytes.Replace(cfg, []byte(`"tie_word_embeddings": true`), []byte(`"tie_word_embeddings": false`), 1))
			writeFile(t, dir, SafetensorsFile, goodFile)
		}, []string{`tensor "lm_head.weight" missing and tie_word_embeddings is false`}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			m, err := Open(dir)
			if err == nil {
				m.Close()
				t.Fatalf("Open succeeded, want error containing %q", tc.want)
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			for _, w := range append(tc.want, dir) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if got := errors.Is(err, ErrUnsupported); got != tc.unsupported {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v, want %v", got, tc.unsupported)
			}
		})
	}
}

func writeFile(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// patchHeader replaces old (which must occur once) with new in the JSON
// header of a safetensors file, keeping the header length.
func patchHeader(t *testing.T, file []byte, old, new string) []byte {
	t.Helper()
	n := binary.LittleEndian.Uint64(file)
	hdr := string(file[8 : 8+n])
	if strings.Count(hdr, old) != 1 {
		t.Fatalf("%q occurs %d times in the header", old, strings.Count(hdr, old))
	}
	hdr = strings.Replace(hdr, old, new, 1)
	if d := len(hdr) - int(n); d > 0 {
		t.Fatalf("patch grows the header by %d bytes", d)
	} else {
		hdr += strings.Repeat(" ", -d)
	}
	out := slices.Clone(file)
	copy(out[8:], hdr)
	return out
}

// addToIndex maps name to shard in dir's index.
func addToIndex(t *testing.T, dir, name, shard string) {
	t.Helper()
	var idx map[string]map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, SafetensorsIndexFile))
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	idx["weight_map"][name] = shard
	b, _ = json.Marshal(idx)
	writeFile(t, dir, SafetensorsIndexFile, b)
}

func TestLayerTensorName(t *testing.T) {
	if got := LayerTensorName(12, AttnQ); got != "model.layers.12.self_attn.q_proj.weight" {
		t.Errorf("LayerTensorName = %q", got)
	}
	for _, tc := range []struct {
		name   string
		layer  int
		suffix string
		ok     bool
	}{
		{"model.layers.3.mlp.up_proj.weight", 3, FFNUp, true},
		{"model.layers.0.self_attn.rotary_emb.inv_freq", 0, RotaryInvFreq, true},
		{"model.layers.03.mlp.up_proj.weight", 0, "", false},
		{"model.layers.-1.mlp.up_proj.weight", 0, "", false},
		{"model.layers.x.mlp", 0, "", false},
		{"model.layers.4", 0, "", false},
		{"model.norm.weight", 0, "", false},
	} {
		l, s, ok := ParseLayerTensorName(tc.name)
		if l != tc.layer || s != tc.suffix || ok != tc.ok {
			t.Errorf("ParseLayerTensorName(%q) = %d, %q, %v", tc.name, l, s, ok)
		}
	}
}
