package convert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"qllama/convert/quant"
	"qllama/format/gguf"
	"qllama/format/hf"
	"qllama/format/safetensors"
	"qllama/infer/tokenizer"
	"qllama/internal/progress"
)

// Weight classes in the report.
const (
	ClassEmbed  = "embed"
	ClassLinear = "linear"
	ClassHead   = "head"
	ClassNorm   = "norm"
	ClassRope   = "rope"
)

// weight is one logical tensor of the output file.
type weight struct {
	name     string // GGUF name of the logical tensor
	src      string // Hugging Face tensor; "" for generated ones
	gen      []float32
	class    string
	rows     int // 0 for 1-D tensors
	cols     int
	heads    int // > 0: Q/K rows permuted with this many heads
	scheme   Scheme
	fallback string
	parts    []part
	enc      *encoded
	cal      *calibration // codes chosen by GPTQ/AWQ for this linear, if any
}

// Convert converts the Hugging Face Llama directory opt.In into the GGUF file
// opt.Out (written atomically: on any error, or when ctx is cancelled,
// nothing is left behind) and reports per-tensor sizes and errors.
func Convert(ctx context.Context, opt Options) (*Report, error) {
	start := time.Now()
	pol, err := opt.resolve()
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	threads := opt.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	src, err := hf.Open(opt.In)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	defer src.Close()
	tok, err := tokenizer.Load(opt.In)
	if err != nil {
		return nil, fmt.Errorf("convert: %s: %w", opt.In, err)
	}
	cfg := src.Config

	var cal *calibration
	if pol.calibrate != "" {
		if cal, err = calibrate(ctx, opt, pol, src, tok); err != nil {
			return nil, fmt.Errorf("convert: %s: %w", opt.In, err)
		}
	}
	ws, err := plan(src, pol, cal)
	if err != nil {
		return nil, fmt.Errorf("convert: %s: %w", opt.In, err)
	}
	// Quantize the first weight (the embedding, a fifth of a Llama 3.2-1B)
	// while the single-threaded source hash runs. Cancel and wait before
	// returning: the source mapping must outlive the goroutine.
	ctx, cancel := context.WithCancel(ctx)
	var pre sync.WaitGroup
	var preErr error
	defer pre.Wait()
	defer cancel()
	pre.Go(func() { preErr = ws[0].encode(ctx, src, threads) })
	files, hashes, err := hashSources(ctx, opt.In, threads)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}

	name := filepath.Base(filepath.Clean(opt.In))
	if abs, err := filepath.Abs(opt.In); err == nil {
		name = filepath.Base(abs)
	}
	kvs := llamaKVs(cfg, name)
	tkv, err := tokenizerKVs(tok, cfg.VocabSize, opt.In)
	if err != nil {
		return nil, fmt.Errorf("convert: %s: %w", opt.In, err)
	}
	kvs = append(kvs, tkv...)
	if cal != nil {
		kvs = append(kvs, cal.kvs(pol.calibrate, opt)...)
	}
	dtype := strings.ToLower(string(src.DType()))
	kvs = append(kvs,
		gguf.KV{Key: gguf.KeyQllamaVersion, Value: uint32(gguf.FormatVersion)},
		gguf.KV{Key: gguf.KeyQllamaMethod, Value: strings.ToLower(opt.Method)},
		gguf.KV{Key: gguf.KeyQllamaScheme, Value: schemeSummary(pol, src)},
		gguf.KV{Key: gguf.KeyQllamaSourceName, Value: name},
		gguf.KV{Key: gguf.KeyQllamaSourceFiles, Value: files},
		gguf.KV{Key: gguf.KeyQllamaSourceHash, Value: hashes},
		gguf.KV{Key: gguf.KeyQllamaSourceDType, Value: dtype},
	)
	if pol.linear.Format == gguf.FormatRTN {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyQllamaBits, Value: uint32(pol.linear.Bits)}, gguf.KV{Key: gguf.KeyQllamaGroupSize, Value: int32(pol.linear.Group)})
	} else if pol.linear.Format == gguf.FormatNF4 || pol.linear.Format == gguf.FormatFP4 {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyQllamaBits, Value: uint32(4)}, gguf.KV{Key: gguf.KeyQllamaGroupSize, Value: int32(pol.linear.Group)})
	}
	native, quantized := true, false
	var fallbacks []string
	for _, w := range ws {
		if !w.scheme.Native() {
			native = false
			kvs = append(kvs, componentKVs(w, dtype)...)
		} else if t := w.scheme.traits(); t.BlockSize > 1 {
			quantized = true
		}
		if w.fallback != "" {
			fallbacks = append(fallbacks, fmt.Sprintf("%s: %s (%s)", w.name, w.scheme, w.fallback))
		}
	}
	if len(fallbacks) > 0 {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyQllamaFallbacks, Value: fallbacks})
	}
	if native {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyGeneralFileType, Value: uint32(fileTypes[pol.linear.Format])})
	}
	if quantized {
		kvs = append(kvs, gguf.KV{Key: gguf.KeyGeneralQuantizationVersion, Value: uint32(gguf.QuantizationVersion)})
	}

	// Tensor specs: the first part of each weight quantizes it; the others
	// write the parts it produced, and the last releases them.
	var specs []gguf.TensorSpec
	var total int64
	for _, w := range ws {
		for _, p := range w.parts {
			size, err := gguf.TensorSpec{Type: p.typ, Shape: p.shape}.Size()
			if err != nil {
				return nil, fmt.Errorf("convert: tensor %s%s: %w", w.name, p.suffix, err)
			}
			total += size
		}
	}
	var bar *progress.Bar
	if opt.Progress != nil {
		bar = progress.New(opt.Progress, total, "convert", progress.Options{Bytes: true})
	}
	rep := &Report{Input: opt.In, Output: opt.Out, Method: strings.ToLower(opt.Method), LlamaCpp: native}
	for _, w := range ws {
		for k, p := range w.parts {
			specs = append(specs, gguf.TensorSpec{Name: w.name + p.suffix, Type: p.typ, Shape: p.shape,
				WriteData: func(out io.Writer) error {
					if k == 0 {
						if w == ws[0] {
							pre.Wait()
							if preErr != nil {
								return preErr
							}
						} else if err := w.encode(ctx, src, threads); err != nil {
							return err
						}
						rep.add(w)
					}
					b := w.enc.data[k]
					w.enc.data[k] = nil
					if k == len(w.parts)-1 {
						w.enc = nil
					}
					if bar != nil {
						bar.Add(int64(len(b)))
					}
					_, err := out.Write(b)
					return err
				}})
		}
	}
	if err := gguf.Write(ctx, opt.Out, kvs, specs); err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	if bar != nil {
		bar.Finish()
	}
	st, err := os.Stat(opt.Out)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	rep.finish(cfg, src, st.Size(), time.Since(start))
	return rep, nil
}

// plan lists the weights to write with their resolved schemes.
func plan(src *hf.Model, pol policy, cal *calibration) ([]*weight, error) {
	c := src.Config
	var ws []*weight
	add := func(name, hfName, class string, rows, cols, heads int, s Scheme) {
		w := &weight{name: name, src: hfName, class: class, rows: rows, cols: cols, heads: heads}
		if rows == 0 {
			w.scheme = Scheme{Format: "f32"}
		} else {
			w.scheme, w.fallback = fitScheme(s, cols)
		}
		w.parts = parts(w.scheme, rows, cols)
		if cal != nil {
			if n := cal.norms[hfName]; n != nil {
				w.gen = n // AWQ folded its scales into this RMSNorm
			}
			if _, ok := cal.weights[hfName]; ok && class == ClassLinear {
				w.cal = cal // rtn layout: fitScheme never replaces rtn
			}
		}
		ws = append(ws, w)
	}
	gname := func(hfName string) string {
		n, _ := gguf.GGUFName(hfName)
		return n
	}
	h, v := c.HiddenSize, c.VocabSize
	add(gname(hf.EmbedName), hf.EmbedName, ClassEmbed, v, h, 0, pol.embed)
	if f := ropeFactors(c); f != nil {
		ws = append(ws, &weight{name: gguf.TensorRopeFreqs, gen: f, class: ClassRope, cols: len(f),
			scheme: Scheme{Format: "f32"}, parts: parts(Scheme{Format: "f32"}, 0, len(f))})
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		for _, sfx := range hf.LayerSuffixes() {
			n := hf.LayerTensorName(l, sfx)
			ti, ok := src.Info(n)
			if !ok {
				return nil, fmt.Errorf("tensor %q missing", n)
			}
			switch {
			case len(ti.Shape) == 1:
				add(gname(n), n, ClassNorm, 0, int(ti.Shape[0]), 0, Scheme{})
			case sfx == hf.AttnQ:
				add(gname(n), n, ClassLinear, int(ti.Shape[0]), int(ti.Shape[1]), c.NumAttentionHeads, pol.linear)
			case sfx == hf.AttnK:
				add(gname(n), n, ClassLinear, int(ti.Shape[0]), int(ti.Shape[1]), c.NumKeyValueHeads, pol.linear)
			default:
				add(gname(n), n, ClassLinear, int(ti.Shape[0]), int(ti.Shape[1]), 0, pol.linear)
			}
		}
	}
	add(gname(hf.NormName), hf.NormName, ClassNorm, 0, h, 0, Scheme{})
	if out := src.OutputName(); out == hf.LMHeadName {
		add("output.weight", hf.LMHeadName, ClassHead, v, h, 0, pol.head)
	} else if pol.head != pol.embed {
		add("output.weight", hf.EmbedName, ClassHead, v, h, 0, pol.head)
	}
	return ws, nil
}

// encode quantizes w from the source model.
func (w *weight) encode(ctx context.Context, src *hf.Model, threads int) error {
	var s *source
	if w.gen != nil {
		s = &source{raw: f32Bytes(w.gen), dtype: safetensors.F32, esize: 4, cols: w.cols}
	} else {
		ti, raw, err := src.Tensor(w.src)
		if err != nil {
			return err
		}
		es, err := ti.DType.Size()
		if err != nil {
			return err
		}
		s = &source{raw: raw, dtype: ti.DType, esize: es, cols: w.cols}
		if w.heads > 0 {
			perm := make([]int, w.rows)
			for i := range perm {
				perm[i] = i
			}
			if s.perm, err = gguf.PermuteQK(perm, 1, w.heads); err != nil {
				return err
			}
		}
	}
	var enc *encoded
	var err error
	if w.cal != nil {
		var eff []float32
		if eff, err = w.cal.effective(w.src); err == nil {
			enc, err = encodeGrouped(ctx, threads, w.scheme, w.cal.weights[w.src], eff, s, w.rows, w.cols)
		}
	} else {
		enc, err = encode(ctx, threads, w.scheme, s, w.rows, w.cols)
	}
	if err != nil {
		if errors.Is(err, quant.ErrOverflow) {
			return fmt.Errorf("%s as %s: %w (choose a wider type for this tensor class)", w.src, w.scheme, err)
		}
		return fmt.Errorf("%s as %s: %w", w.src, w.scheme, err)
	}
	w.enc = enc
	return nil
}

// componentKVs returns the qllama.quant.<T>.* keys of a non-native weight.
func componentKVs(w *weight, dtype string) []gguf.KV {
	k := func(f string) string { return gguf.TensorKey(w.name, f) }
	s := w.scheme
	format := s.Format
	if format == gguf.FormatRTN {
		format = gguf.StoredInt
	}
	kvs := []gguf.KV{
		{Key: k("format"), Value: format},
		{Key: k("shape"), Value: []int64{int64(w.rows), int64(w.cols)}},
		{Key: k("bits"), Value: uint32(s.Bits)},
		{Key: k("dtype"), Value: dtype},
	}
	switch s.Format {
	case gguf.FormatNF4, gguf.FormatFP4:
		t := quant.NF4
		if s.Format == gguf.FormatFP4 {
			t = quant.FP4
		}
		cb := quant.Codebook(t)
		kvs = append(kvs,
			gguf.KV{Key: k("group_size"), Value: uint32(s.Group)},
			gguf.KV{Key: k("codebook"), Value: cb[:]},
			gguf.KV{Key: k("double_quant"), Value: s.DoubleQuant})
		if s.DoubleQuant {
			kvs = append(kvs, gguf.KV{Key: k("double_quant_group_size"), Value: uint32(quant.NestedBlockSize)})
		}
	case gguf.FormatRTN:
		kvs = append(kvs,
			gguf.KV{Key: k("group_size"), Value: uint32(rtnGroupSize(s, w.cols))},
			gguf.KV{Key: k("symmetric"), Value: s.Sym})
	case gguf.FormatInt8:
		kvs = append(kvs, gguf.KV{Key: k("group_size"), Value: uint32(0)})
	}
	return kvs
}

// schemeSummary is the human-readable qllama.quant.scheme.
func schemeSummary(p policy, src *hf.Model) string {
	s := "linear " + p.linear.String() + ", embed " + p.embed.String()
	if src.OutputName() == hf.LMHeadName || p.head != p.embed {
		s += ", output " + p.head.String()
	} else {
		s += ", output tied"
	}
	return s
}

// hashSources returns the weight files of dir and their SHA-256, hashed in
// parallel.
func hashSources(ctx context.Context, dir string, threads int) ([]string, []string, error) {
	files := []string{hf.SafetensorsFile}
	if data, err := os.ReadFile(filepath.Join(dir, hf.SafetensorsIndexFile)); err == nil {
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(data, &idx); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", hf.SafetensorsIndexFile, err)
		}
		seen := map[string]bool{}
		files = files[:0]
		for _, f := range idx.WeightMap {
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
		sort.Strings(files)
	}
	files = append([]string{hf.ConfigFile}, files...)
	hashes := make([]string, len(files))
	errs := make([]error, len(files))
	sem := make(chan struct{}, max(1, threads))
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			hashes[i], errs[i] = hashFile(ctx, filepath.Join(dir, f))
		}()
	}
	wg.Wait()
	return files, hashes, errors.Join(errs...)
}

func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", path, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
