//go:build cuda

package cuda

import (
	"fmt"

	"gorgonia.org/cu"

	"qllama/convert/quant"
	"qllama/infer"
)

// Format ids, as in kernels/qllama.cuh.
const (
	fmtF32 = iota
	fmtF16
	fmtBF16
	fmtQ8_0
	fmtQ4_0
	fmtGrouped
	fmtInt8
	fmtBnb4
	fmtQ4_1
	fmtQ5_0
	fmtQ5_1
	fmtIQ4NL
	fmtQ4K
	fmtQ6K
)

// fmtNames are the kernel name suffixes (QLLAMA_FORMATS in qllama.cuh), by id.
var fmtNames = [...]string{"f32", "f16", "bf16", "q8_0", "q4_0", "grouped", "int8", "bnb4",
	"q4_1", "q5_0", "q5_1", "iq4_nl", "q4_k", "q6_k"}

// packedFormats maps the traits name of an *infer.Packed weight (ggml's
// float and block formats) to its format id.
var packedFormats = map[string]int{
	"f32": fmtF32, "f16": fmtF16, "bf16": fmtBF16, "q8_0": fmtQ8_0, "q4_0": fmtQ4_0,
	"q4_1": fmtQ4_1, "q5_0": fmtQ5_0, "q5_1": fmtQ5_1, "iq4_nl": fmtIQ4NL, "q4_k": fmtQ4K, "q6_k": fmtQ6K,
}

// weight is a matrix in device memory in one of the packed formats.
type weight struct {
	format     int
	desc       string // e.g. "q4_0", "int4 g128 asym"
	rows, cols int
	data       cu.DevicePtr
	scale      cu.DevicePtr
	zero       cu.DevicePtr
	gidx       cu.DevicePtr
	lut        cu.DevicePtr
	p0, p1, p2 int64
	bytes      int64 // device bytes held
	ptrs       []cu.DevicePtr
}

// args returns the kernel parameters of the weight (WPARAMS in matvec.cu).
func (w *weight) args() []any {
	return []any{w.data, w.scale, w.zero, w.gidx, w.lut, w.p0, w.p1, w.p2}
}

func (w *weight) free() {
	for _, p := range w.ptrs {
		cu.MemFree(p)
	}
	w.ptrs = nil
}

// UnsupportedError reports a weight format the GPU kernels cannot read yet.
type UnsupportedError struct {
	Name, Format string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("cuda: %s: format %s is not supported on the GPU yet", e.Name, e.Format)
}

// describe names the storage format of an infer weight (for errors and
// reports), whether or not the GPU supports it.
func describe(x any) string {
	x = unwrapQuant(x)
	switch v := x.(type) {
	case *infer.Dense:
		return "f32"
	case *infer.Packed:
		return v.T.Name
	case *infer.TensorLinear:
		switch t := v.T.(type) {
		case *quant.Grouped:
			s := fmt.Sprintf("int%d", t.Bits)
			if t.GroupSize > 0 {
				s += fmt.Sprintf(" g%d", t.GroupSize)
			}
			if t.Sym {
				s += " sym"
			} else {
				s += " asym"
			}
			if t.GIdx != nil {
				s += " act-order"
			}
			return s
		case *quant.Int8:
			return "int8"
		case *quant.Bnb4:
			s := t.Type.String()
			if t.Nested != nil {
				s += " double-quant"
			}
			return s
		default:
			return fmt.Sprintf("%T", t)
		}
	}
	return fmt.Sprintf("%T", x)
}

// uploadWeight copies one weight (an infer.Linear or infer.Embedding) to the
// device in its own format.
func (d *Device) uploadWeight(name string, x any) (w *weight, err error) {
	w = &weight{desc: describe(x)}
	held := w
	defer func() {
		if err != nil {
			held.free()
		}
	}()
	put := func(p cu.DevicePtr, e error, n int64) cu.DevicePtr {
		if e != nil {
			if err == nil {
				err = e
			}
			return 0
		}
		w.ptrs = append(w.ptrs, p)
		w.bytes += n
		return p
	}
	what := name + " (" + w.desc + ")"
	x = unwrapQuant(x)
	switch v := x.(type) {
	case *infer.Dense:
		w.format, w.rows, w.cols = fmtF32, v.R, v.C
		if len(v.W) != v.R*v.C {
			return nil, fmt.Errorf("cuda: %s: %d values for [%d %d]", name, len(v.W), v.R, v.C)
		}
		p, e := upload(d, v.W, what)
		w.data = put(p, e, int64(len(v.W))*4)
	case *infer.Packed:
		w.rows, w.cols = v.R, v.C
		f, ok := packedFormats[v.T.Name]
		if !ok {
			return nil, &UnsupportedError{name, v.T.Name}
		}
		w.format = f
		// The kernels decode block formats a block at a time: rows must be
		// whole blocks (32 weights, 256 for the K-quants).
		if bs := v.T.BlockSize; bs > 1 && v.C%bs != 0 {
			return nil, fmt.Errorf("cuda: %s: %s row of %d weights is not whole blocks of %d", name, w.desc, v.C, bs)
		}
		rb, e := v.T.RowBytes(v.C)
		if e != nil || len(v.Data) != rb*v.R {
			return nil, fmt.Errorf("cuda: %s: %s data of %d bytes does not hold [%d %d]", name, v.T.Name, len(v.Data), v.R, v.C)
		}
		p, e := upload(d, v.Data, what)
		w.data = put(p, e, int64(len(v.Data)))
	case *infer.TensorLinear:
		if e := v.T.Validate(); e != nil {
			return nil, fmt.Errorf("cuda: %s: %w", name, e)
		}
		w.rows, w.cols = v.T.Shape()
		switch t := v.T.(type) {
		case *quant.Grouped:
			w.format = fmtGrouped
			ng := t.NumGroups()
			gs := t.GroupSize
			if gs <= 0 || gs >= t.Cols {
				gs = t.Cols
			}
			if t.GIdx == nil && t.Cols%8 == 0 && gs%8 != 0 {
				return nil, &UnsupportedError{name, w.desc + fmt.Sprintf(" (group size %d is not a multiple of 8)", gs)}
			}
			packed, e := quant.PackBits(t.Codes, t.Bits)
			if e != nil {
				return nil, fmt.Errorf("cuda: %s: %w", name, e)
			}
			packed = append(packed, make([]byte, 8)...) // slack for the 4-byte loads of the last chunk
			w.p0, w.p1, w.p2 = int64(gs), int64(t.Bits), int64(ng)
			p, e := upload(d, packed, what)
			w.data = put(p, e, int64(len(packed)))
			p, e = upload(d, t.Scales, what+" scales")
			w.scale = put(p, e, int64(len(t.Scales))*4)
			p, e = upload(d, t.Zeros, what+" zeros")
			w.zero = put(p, e, int64(len(t.Zeros)))
			if t.GIdx != nil {
				p, e = upload(d, t.GIdx, what+" g_idx")
				w.gidx = put(p, e, int64(len(t.GIdx))*4)
			}
		case *quant.Int8:
			w.format = fmtInt8
			codes := make([]byte, len(t.Codes), len(t.Codes)+8)
			for i, c := range t.Codes {
				codes[i] = byte(c)
			}
			p, e := upload(d, codes, what)
			w.data = put(p, e, int64(len(codes)))
			p, e = upload(d, t.Absmax, what+" absmax")
			w.scale = put(p, e, int64(len(t.Absmax))*4)
		case *quant.Bnb4:
			w.format = fmtBnb4
			// Double-quantized absmax are expanded to float32 here: 4 bytes
			// per block on the device instead of 1 (0.5 bit/weight at block 64).
			am, e := t.BlockAbsmax()
			if e != nil {
				return nil, fmt.Errorf("cuda: %s: %w", name, e)
			}
			lut := quant.Codebook(t.Type)
			w.p0 = int64(t.BlockSize)
			data := append(append([]byte(nil), t.Packed...), make([]byte, 8)...)
			p, e := upload(d, data, what)
			w.data = put(p, e, int64(len(data)))
			p, e = upload(d, am, what+" absmax")
			w.scale = put(p, e, int64(len(am))*4)
			p, e = upload(d, lut[:], what+" codebook")
			w.lut = put(p, e, 64)
		default:
			return nil, &UnsupportedError{name, w.desc}
		}
	default:
		return nil, &UnsupportedError{name, w.desc}
	}
	if err != nil {
		return nil, err
	}
	return w, nil
}

// unwrapQuant turns any weight that carries a whole-tensor quantized matrix
// (an *infer.TensorLinear, or a loader's wrapper embedding one, as weights
// loaded from GGUF files are) into a plain *infer.TensorLinear.
func unwrapQuant(x any) any {
	if q, ok := x.(interface{ Quant() quant.Tensor }); ok {
		return &infer.TensorLinear{T: q.Quant()}
	}
	return x
}
