package infer

import (
	"fmt"
	"math"
)

// This file exposes one decoder block at a time for calibration-based
// quantizers (GPTQ, AWQ): they run a batch of whole sequences through a
// block, record the input of every linear layer, swap some weights and run
// the block again. There is no KV cache: every sequence starts at position 0
// and attends causally to itself only. The arithmetic is Runner.Forward's
// (same rmsNorm, rope, softmax and swiglu), so a block run here gives the
// activations the runtime computes.

// BlockActivations are the inputs of the linear layers of one decoder block
// for n activation rows, row-major.
type BlockActivations struct {
	AttnIn []float32 // [n, Dim]: attention RMSNorm output, input of q, k and v
	OIn    []float32 // [n, Heads*HeadDim]: attention output, input of o
	FFNIn  []float32 // [n, Dim]: FFN RMSNorm output, input of gate and up
	DownIn []float32 // [n, FFNDim]: silu(gate)*up, input of down
}

// RMSNormRows applies the runtime's RMSNorm with weight w to the n rows of x
// (each len(w) long), writing dst.
func RMSNormRows(dst, x, w []float32, eps float32, n int) error {
	d := len(w)
	if d == 0 || len(x) < n*d || len(dst) < n*d {
		return fmt.Errorf("rmsnorm: %d rows of %d values need %d, have x %d, dst %d", n, d, n*d, len(x), len(dst))
	}
	for t := 0; t < n; t++ {
		rmsNorm(dst[t*d:(t+1)*d], x[t*d:(t+1)*d], w, eps)
	}
	return nil
}

func checkBlockArgs(c *Config, L *Layer, what string, nseq, seqLen int) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if nseq <= 0 || seqLen <= 0 {
		return fmt.Errorf("%s: %d sequences of %d rows", what, nseq, seqLen)
	}
	if L == nil || L.Q == nil || L.K == nil || L.V == nil || L.O == nil || L.Gate == nil || L.Up == nil || L.Down == nil {
		return fmt.Errorf("%s: layer has a missing linear", what)
	}
	return nil
}

func need(what, name string, b []float32, n int) error {
	if len(b) < n {
		return fmt.Errorf("%s: %s holds %d values, need %d", what, name, len(b), n)
	}
	return nil
}

// Attention computes o(attention(q(xn), k(xn), v(xn))) for nseq sequences of
// seqLen rows each (rows of sequence s are s*seqLen .. (s+1)*seqLen-1, at
// positions 0..seqLen-1), writing [n, Dim] into out. If att is not nil it
// receives the attention output, the input of o ([n, Heads*HeadDim]).
func Attention(c *Config, L *Layer, out, att, xn []float32, nseq, seqLen int) error {
	const what = "attention"
	if err := checkBlockArgs(c, L, what, nseq, seqLen); err != nil {
		return err
	}
	n := nseq * seqLen
	dim, qDim, kvDim, hd, half := c.Dim, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim, c.HeadDim, c.HeadDim/2
	if err := need(what, "xn", xn, n*dim); err != nil {
		return err
	}
	if err := need(what, "out", out, n*dim); err != nil {
		return err
	}
	if att == nil {
		att = make([]float32, n*qDim)
	} else if err := need(what, "att", att, n*qDim); err != nil {
		return err
	}
	q, k, v := make([]float32, n*qDim), make([]float32, n*kvDim), make([]float32, n*kvDim)
	L.Q.MatMul(q, xn, n)
	L.K.MatMul(k, xn, n)
	L.V.MatMul(v, xn, n)
	cos, sin := make([]float32, seqLen*half), make([]float32, seqLen*half)
	for p := 0; p < seqLen; p++ {
		ropeTable(cos[p*half:(p+1)*half], sin[p*half:(p+1)*half], c.RopeInvFreq, p)
	}
	for t := 0; t < n; t++ {
		p := t % seqLen
		cs, sn := cos[p*half:(p+1)*half], sin[p*half:(p+1)*half]
		rope(q[t*qDim:(t+1)*qDim], c.Heads, hd, cs, sn)
		rope(k[t*kvDim:(t+1)*kvDim], c.KVHeads, hd, cs, sn)
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	group := c.Heads / c.KVHeads
	ParallelFor(n*c.Heads, seqLen*hd, func(lo, hi int) {
		scores := make([]float32, seqLen)
		for task := lo; task < hi; task++ {
			t, h := task/c.Heads, task%c.Heads
			base := t - t%seqLen // first row of this sequence
			kh := h / group
			qh := q[t*qDim+h*hd : t*qDim+(h+1)*hd]
			sc := scores[:t-base+1]
			for p := range sc {
				kr := k[(base+p)*kvDim+kh*hd : (base+p)*kvDim+(kh+1)*hd]
				var dot float32
				for i, qv := range qh {
					dot += qv * kr[i]
				}
				sc[p] = dot * scale
			}
			softmax(sc)
			o := att[t*qDim+h*hd : t*qDim+(h+1)*hd]
			clear(o)
			for p, w := range sc {
				vr := v[(base+p)*kvDim+kh*hd : (base+p)*kvDim+(kh+1)*hd]
				for i := range o {
					o[i] += w * vr[i]
				}
			}
		}
	})
	L.O.MatMul(out, att, n)
	return nil
}

// MLP computes down(silu(gate(xn)) * up(xn)) for n rows into out ([n, Dim]).
// If act is not nil it receives the input of down ([n, FFNDim]).
func MLP(c *Config, L *Layer, out, act, xn []float32, n int) error {
	const what = "mlp"
	if err := checkBlockArgs(c, L, what, 1, max(n, 1)); err != nil {
		return err
	}
	if n <= 0 {
		return fmt.Errorf("%s: %d rows", what, n)
	}
	if err := need(what, "xn", xn, n*c.Dim); err != nil {
		return err
	}
	if err := need(what, "out", out, n*c.Dim); err != nil {
		return err
	}
	if act == nil {
		act = make([]float32, n*c.FFNDim)
	} else if err := need(what, "act", act, n*c.FFNDim); err != nil {
		return err
	}
	up := make([]float32, n*c.FFNDim)
	L.Gate.MatMul(act, xn, n)
	L.Up.MatMul(up, xn, n)
	swiglu(act[:n*c.FFNDim], up)
	L.Down.MatMul(out, act, n)
	return nil
}

// BlockForward runs decoder block L over nseq sequences of seqLen rows each
// held in x ([nseq*seqLen, Dim]), replacing x with the block's output. If
// acts is not nil, the inputs of its linears are recorded there (slices too
// short are reallocated).
func BlockForward(c *Config, L *Layer, x []float32, nseq, seqLen int, acts *BlockActivations) error {
	const what = "block"
	if err := checkBlockArgs(c, L, what, nseq, seqLen); err != nil {
		return err
	}
	n := nseq * seqLen
	dim := c.Dim
	if err := need(what, "x", x, n*dim); err != nil {
		return err
	}
	if len(L.AttnNorm) != dim || len(L.FFNNorm) != dim {
		return fmt.Errorf("%s: norm weights of %d and %d values, dim %d", what, len(L.AttnNorm), len(L.FFNNorm), dim)
	}
	var tmp BlockActivations
	if acts == nil {
		acts = &tmp
	}
	fit := func(b []float32, m int) []float32 {
		if len(b) < m {
			return make([]float32, m)
		}
		return b[:m]
	}
	acts.AttnIn = fit(acts.AttnIn, n*dim)
	acts.OIn = fit(acts.OIn, n*c.Heads*c.HeadDim)
	acts.FFNIn = fit(acts.FFNIn, n*dim)
	acts.DownIn = fit(acts.DownIn, n*c.FFNDim)
	out := make([]float32, n*dim)
	for t := 0; t < n; t++ {
		rmsNorm(acts.AttnIn[t*dim:(t+1)*dim], x[t*dim:(t+1)*dim], L.AttnNorm, c.NormEps)
	}
	if err := Attention(c, L, out, acts.OIn, acts.AttnIn, nseq, seqLen); err != nil {
		return err
	}
	addTo(x[:n*dim], out)
	for t := 0; t < n; t++ {
		rmsNorm(acts.FFNIn[t*dim:(t+1)*dim], x[t*dim:(t+1)*dim], L.FFNNorm, c.NormEps)
	}
	if err := MLP(c, L, out, acts.DownIn, acts.FFNIn, n); err != nil {
		return err
	}
	addTo(x[:n*dim], out)
	return nil
}

// EmbedRows writes the embeddings of ids into x ([len(ids), Dim]).
func (m *Model) EmbedRows(x []float32, ids []int) error {
	d := m.Dim
	if len(x) < len(ids)*d {
		return fmt.Errorf("embed: %d ids need %d values, have %d", len(ids), len(ids)*d, len(x))
	}
	for i, id := range ids {
		if id < 0 || id >= m.Embed.Rows() {
			return fmt.Errorf("embed: token id %d outside the vocabulary [0, %d)", id, m.Embed.Rows())
		}
		m.Embed.Row(x[i*d:(i+1)*d], id)
	}
	return nil
}
