package convert

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/x448/float16"

	"qllama/convert/quant"
	"qllama/format/gguf"
	"qllama/format/safetensors"
)

// part is one stored tensor of a weight: the weight itself for ggml types,
// or one of its components.
type part struct {
	suffix string // "" or ".codes", ".absmax", ...
	typ    gguf.Type
	shape  []int64
}

// source reads rows of a 2-D (or 1-D) float tensor from the mapped
// safetensors bytes, optionally through a row permutation.
type source struct {
	raw   []byte
	dtype safetensors.DType
	esize int
	cols  int
	perm  []int // output row r reads source row perm[r]; nil: identity
}

// rows converts rows [lo, hi) into dst (len (hi-lo)*cols).
func (s *source) rows(dst []float32, lo, hi int) error {
	rb := s.cols * s.esize
	if s.perm == nil {
		return safetensors.ToFloat32(dst[:(hi-lo)*s.cols], s.raw[lo*rb:hi*rb], s.dtype)
	}
	for r := lo; r < hi; r++ {
		p := s.perm[r]
		if err := safetensors.ToFloat32(dst[(r-lo)*s.cols:(r-lo+1)*s.cols], s.raw[p*rb:(p+1)*rb], s.dtype); err != nil {
			return err
		}
	}
	return nil
}

// errSums accumulates sum (w - deq)^2 and sum w^2 in float64.
type errSums struct{ diff, ref float64 }

func (e *errSums) add(w, deq []float32) {
	// Four independent accumulator pairs keep the float64 adds pipelined.
	var d0, d1, d2, d3, r0, r1, r2, r3 float64
	n := len(w) &^ 3
	deq = deq[:len(w)]
	for i := 0; i < n; i += 4 {
		x0, x1, x2, x3 := float64(w[i]), float64(w[i+1]), float64(w[i+2]), float64(w[i+3])
		y0, y1, y2, y3 := x0-float64(deq[i]), x1-float64(deq[i+1]), x2-float64(deq[i+2]), x3-float64(deq[i+3])
		d0, d1, d2, d3 = d0+y0*y0, d1+y1*y1, d2+y2*y2, d3+y3*y3
		r0, r1, r2, r3 = r0+x0*x0, r1+x1*x1, r2+x2*x2, r3+x3*x3
	}
	for i := n; i < len(w); i++ {
		x := float64(w[i])
		y := x - float64(deq[i])
		d0 += y * y
		r0 += x * x
	}
	e.diff += (d0 + d1) + (d2 + d3)
	e.ref += (r0 + r1) + (r2 + r3)
}

// rel returns ||W - deq(W)|| / ||W|| (0 for an all-zero tensor coded exactly).
func (e errSums) rel() float64 {
	if e.ref == 0 {
		if e.diff == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return math.Sqrt(e.diff / e.ref)
}

// chunkWork runs fn over row chunks [lo, hi) of about chunkElems elements on
// up to threads goroutines, each with its own scratch, checking ctx between
// chunks. Error sums are combined in chunk order, so results are
// deterministic.
func chunkWork(ctx context.Context, threads, rows, cols int, fn func(sc *scratch, lo, hi int, acc *errSums) error) (errSums, error) {
	const chunkElems = 1 << 18
	per := max(1, chunkElems/max(cols, 1))
	n := (rows + per - 1) / per
	sums := make([]errSums, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(threads, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := &scratch{}
			for i := range next {
				if errs[i] = ctx.Err(); errs[i] != nil {
					continue
				}
				lo, hi := i*per, min(rows, (i+1)*per)
				errs[i] = fn(sc, lo, hi, &sums[i])
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	var total errSums
	for i := range sums {
		if errs[i] != nil {
			return total, errs[i]
		}
		total.diff += sums[i].diff
		total.ref += sums[i].ref
	}
	return total, nil
}

// scratch holds a worker's reusable buffers.
type scratch struct{ src, deq []float32 }

func (s *scratch) grow(n int) (src, deq []float32) {
	if cap(s.src) < n {
		s.src, s.deq = make([]float32, n), make([]float32, n)
	}
	return s.src[:n], s.deq[:n]
}

// parts returns the stored tensors of a [rows, cols] weight in scheme s
// (rows 0: a 1-D tensor of cols values, which must be native).
func parts(s Scheme, rows, cols int) []part {
	r, c := int64(rows), int64(cols)
	if s.Native() {
		shape := []int64{r, c}
		if rows == 0 {
			shape = []int64{c}
		}
		return []part{{"", gguf.Type(s.traits().GGUF), shape}}
	}
	switch s.Format {
	case gguf.FormatInt8:
		return []part{{".codes", gguf.TypeI8, []int64{r, c}}, {".absmax", gguf.TypeF32, []int64{r}}}
	case gguf.FormatNF4, gguf.FormatFP4:
		nb := c / int64(s.Group)
		ps := []part{{".codes", gguf.TypeI8, []int64{r, c / 2}}}
		if !s.DoubleQuant {
			return append(ps, part{".absmax", gguf.TypeF32, []int64{r, nb}})
		}
		nested := (r*nb + quant.NestedBlockSize - 1) / quant.NestedBlockSize
		return append(ps,
			part{".absmax", gguf.TypeI8, []int64{r, nb}},
			part{".absmax.scales", gguf.TypeF32, []int64{nested}},
			part{".absmax.offset", gguf.TypeF32, []int64{1}},
			part{".absmax.codebook", gguf.TypeF32, []int64{256}})
	case gguf.FormatRTN:
		ng := int64(rtnGroups(s, cols))
		ps := []part{
			{".codes", gguf.TypeI8, []int64{r, int64(rtnRowBytes(s.Bits, cols))}},
			{".scales", gguf.TypeF32, []int64{r, ng}},
		}
		if !s.Sym {
			ps = append(ps, part{".zeros", gguf.TypeF16, []int64{r, ng}})
		}
		return ps
	}
	panic("convert: unknown format " + s.Format)
}

// rtnGroupSize is the stored group size: 0 (one group per row) when the
// group covers the row, as quant.RTN does.
func rtnGroupSize(s Scheme, cols int) int {
	if s.Group <= 0 || s.Group >= cols {
		return 0
	}
	return s.Group
}

func rtnGroups(s Scheme, cols int) int {
	g := rtnGroupSize(s, cols)
	if g == 0 {
		return 1
	}
	return (cols + g - 1) / g
}

func rtnRowBytes(bits, cols int) int { return (cols*bits + 7) / 8 }

// packRow writes codes as an LSB-first bit stream of bits-wide codes into
// dst (len rtnRowBytes(bits, len(codes))).
func packRow(dst []byte, codes []uint8, bits int) {
	var acc uint64
	n, o := 0, 0
	for _, c := range codes {
		acc |= uint64(c) << n
		n += bits
		for n >= 8 {
			dst[o] = byte(acc)
			o++
			acc >>= 8
			n -= 8
		}
	}
	if n > 0 {
		dst[o] = byte(acc)
	}
}

// encoded is a quantized weight: one byte slice per part, and its error.
type encoded struct {
	data [][]byte
	err  errSums
}

// encode quantizes a [rows, cols] weight (rows 0: 1-D) read from src.
func encode(ctx context.Context, threads int, s Scheme, src *source, rows, cols int) (*encoded, error) {
	r := max(rows, 1)
	switch {
	case s.Native():
		return encodeNative(ctx, threads, s.traits(), src, r, cols)
	case s.Format == gguf.FormatInt8:
		return encodeInt8(ctx, threads, src, r, cols)
	case s.Format == gguf.FormatNF4 || s.Format == gguf.FormatFP4:
		return encodeBnb4(ctx, threads, s, src, r, cols)
	case s.Format == gguf.FormatRTN:
		return encodeRTN(ctx, threads, s, src, r, cols)
	}
	return nil, fmt.Errorf("unknown format %q", s.Format)
}

func encodeNative(ctx context.Context, threads int, t quant.Traits, src *source, rows, cols int) (*encoded, error) {
	rb, err := t.RowBytes(cols)
	if err != nil {
		return nil, err
	}
	out := make([]byte, rows*rb)
	sums, err := chunkWork(ctx, threads, rows, cols, func(sc *scratch, lo, hi int, acc *errSums) error {
		w, deq := sc.grow((hi - lo) * cols)
		if err := src.rows(w, lo, hi); err != nil {
			return err
		}
		for i := 0; i < hi-lo; i++ {
			row, dst := w[i*cols:(i+1)*cols], out[(lo+i)*rb:(lo+i+1)*rb]
			if err := t.Quantize(dst, row); err != nil {
				return fmt.Errorf("row %d: %w", lo+i, err)
			}
			if err := t.Dequantize(deq[i*cols:(i+1)*cols], dst); err != nil {
				return fmt.Errorf("row %d: %w", lo+i, err)
			}
		}
		acc.add(w, deq)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &encoded{data: [][]byte{out}, err: sums}, nil
}

func encodeInt8(ctx context.Context, threads int, src *source, rows, cols int) (*encoded, error) {
	codes := make([]byte, rows*cols)
	absmax := make([]float32, rows)
	sums, err := chunkWork(ctx, threads, rows, cols, func(sc *scratch, lo, hi int, acc *errSums) error {
		w, _ := sc.grow((hi - lo) * cols)
		if err := src.rows(w, lo, hi); err != nil {
			return err
		}
		q, err := quant.QuantizeInt8(w, hi-lo, cols)
		if err != nil {
			return err
		}
		for i, c := range q.Codes {
			codes[lo*cols+i] = byte(c)
		}
		copy(absmax[lo:hi], q.Absmax)
		deq, err := q.Dequantize()
		if err != nil {
			return err
		}
		acc.add(w, deq)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &encoded{data: [][]byte{codes, f32Bytes(absmax)}, err: sums}, nil
}

func encodeBnb4(ctx context.Context, threads int, s Scheme, src *source, rows, cols int) (*encoded, error) {
	typ := quant.NF4
	if s.Format == gguf.FormatFP4 {
		typ = quant.FP4
	}
	bpr := cols / s.Group // blocks per row
	packed := make([]byte, rows*cols/2)
	absmax := make([]float32, rows*bpr)
	coder := fourBitCoders()[typ]
	lut := quant.Codebook(typ)
	sums, err := chunkWork(ctx, threads, rows, cols, func(sc *scratch, lo, hi int, acc *errSums) error {
		w, deq := sc.grow((hi - lo) * cols)
		if err := src.rows(w, lo, hi); err != nil {
			return err
		}
		if err := checkFinite(w); err != nil {
			return fmt.Errorf("row %d: %w", lo+err.(finiteError).i/cols, err)
		}
		if s.DoubleQuant {
			deq = nil // the error needs the nested absmax: second pass below
		}
		quantizeFourBitRows(coder, &lut, w, s.Group, packed[lo*cols/2:hi*cols/2], absmax[lo*bpr:hi*bpr], deq)
		if deq != nil {
			acc.add(w, deq)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !s.DoubleQuant {
		return &encoded{data: [][]byte{packed, f32Bytes(absmax)}, err: sums}, nil
	}
	nested := quant.NestAbsmax(absmax)
	full := &quant.Bnb4{Type: typ, Rows: rows, Cols: cols, BlockSize: s.Group, Packed: packed, Nested: nested}
	am, err := full.BlockAbsmax()
	if err != nil {
		return nil, err
	}
	sums, err = chunkWork(ctx, threads, rows, cols, func(sc *scratch, lo, hi int, acc *errSums) error {
		w, deq := sc.grow((hi - lo) * cols)
		if err := src.rows(w, lo, hi); err != nil {
			return err
		}
		base := lo * cols
		for i := range w {
			e := base + i
			c := packed[e/2] >> 4
			if e%2 == 1 {
				c = packed[e/2] & 15
			}
			deq[i] = lut[c] * am[e/s.Group]
		}
		acc.add(w, deq)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &encoded{data: [][]byte{packed, nested.Codes, f32Bytes(nested.Absmax), f32Bytes([]float32{nested.Offset}), f32Bytes(nested.Map[:])}, err: sums}, nil
}

// groupedOut holds the rtn layout of one [rows, cols] weight being written:
// bit-packed codes per row, float32 scales and (asymmetric) float16 zeros per
// group. encodeRTN and encodeGrouped (GPTQ/AWQ) fill it row by row.
type groupedOut struct {
	bits, cols, ng, rb int
	codes              []byte
	scales             []float32
	zeros              []byte // nil when symmetric
}

func newGroupedOut(s Scheme, rows, cols int) *groupedOut {
	o := &groupedOut{bits: s.Bits, cols: cols, ng: rtnGroups(s, cols), rb: rtnRowBytes(s.Bits, cols)}
	o.codes = make([]byte, rows*o.rb)
	o.scales = make([]float32, rows*o.ng)
	if !s.Sym {
		o.zeros = make([]byte, 2*rows*o.ng)
	}
	return o
}

// put stores row gr of g as output row r.
func (o *groupedOut) put(r int, g *quant.Grouped, gr int) {
	ng, cols := o.ng, o.cols
	packRow(o.codes[r*o.rb:(r+1)*o.rb], g.Codes[gr*cols:(gr+1)*cols], o.bits)
	copy(o.scales[r*ng:(r+1)*ng], g.Scales[gr*ng:(gr+1)*ng])
	if o.zeros != nil {
		for i, z := range g.Zeros[gr*ng : (gr+1)*ng] {
			binary.LittleEndian.PutUint16(o.zeros[2*(r*ng+i):], float16.Fromfloat32(float32(z)).Bits())
		}
	}
}

// data returns the component tensors' bytes: codes, scales[, zeros].
func (o *groupedOut) data() [][]byte {
	d := [][]byte{o.codes, f32Bytes(o.scales)}
	if o.zeros != nil {
		d = append(d, o.zeros)
	}
	return d
}

func encodeRTN(ctx context.Context, threads int, s Scheme, src *source, rows, cols int) (*encoded, error) {
	gs := rtnGroupSize(s, cols)
	out := newGroupedOut(s, rows, cols)
	sums, err := chunkWork(ctx, threads, rows, cols, func(sc *scratch, lo, hi int, acc *errSums) error {
		w, _ := sc.grow((hi - lo) * cols)
		if err := src.rows(w, lo, hi); err != nil {
			return err
		}
		g, err := quant.RTN(w, hi-lo, cols, quant.GroupedOptions{Bits: s.Bits, GroupSize: gs, Sym: s.Sym})
		if err != nil {
			return err
		}
		for i := 0; i < hi-lo; i++ {
			out.put(lo+i, g, i)
		}
		deq, err := g.Dequantize()
		if err != nil {
			return err
		}
		acc.add(w, deq)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &encoded{data: out.data(), err: sums}, nil
}

// finiteError reports a NaN or infinite source value.
type finiteError struct {
	i int
	v float32
}

func (e finiteError) Error() string {
	return fmt.Sprintf("element %d is %v: %v", e.i, e.v, quant.ErrNonFinite)
}
func (e finiteError) Unwrap() error { return quant.ErrNonFinite }

// checkFinite rejects NaN and Inf (quant's encoders do the same).
func checkFinite(w []float32) error {
	for i, v := range w {
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 {
			return finiteError{i, v}
		}
	}
	return nil
}

// f32Bytes returns v little-endian.
func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}
