package infer

import (
	"math"
)

// rmsNorm writes x / sqrt(mean(x^2) + eps) * w into dst (HF LlamaRMSNorm in
// float32; the sum of squares is accumulated in float64).
func rmsNorm(dst, x, w []float32, eps float32) {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	inv := float32(1 / math.Sqrt(float64(float32(ss/float64(len(x)))+eps)))
	for i, v := range x {
		dst[i] = w[i] * (v * inv)
	}
}

// ropeTable returns cos and sin for one position: HeadDim/2 values each,
// computed as HF does (angle = float32(pos) * float32(inv_freq), rounded to
// float32 before cos/sin).
func ropeTable(cos, sin []float32, invFreq []float64, pos int) {
	for i, f := range invFreq {
		a := float64(float32(pos) * float32(f))
		cos[i] = float32(math.Cos(a))
		sin[i] = float32(math.Sin(a))
	}
}

// rope applies rotate_half rotary embedding in place to the heads of x
// (nheads*headDim values): for i < d/2, (x[i], x[i+d/2]) is rotated by angle i.
func rope(x []float32, nheads, headDim int, cos, sin []float32) {
	half := headDim / 2
	for h := 0; h < nheads; h++ {
		v := x[h*headDim : (h+1)*headDim]
		for i := 0; i < half; i++ {
			x1, x2 := v[i], v[i+half]
			v[i] = x1*cos[i] - x2*sin[i]
			v[i+half] = x2*cos[i] + x1*sin[i]
		}
	}
}

// softmax normalises x in place.
func softmax(x []float32) {
	m := float32(math.Inf(-1))
	for _, v := range x {
		if v > m {
			m = v
		}
	}
	var sum float64
	for i, v := range x {
		e := float32(math.Exp(float64(v - m)))
		x[i] = e
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for i := range x {
		x[i] *= inv
	}
}

// swiglu writes silu(gate) * up into gate.
func swiglu(gate, up []float32) {
	for i, g := range gate {
		gate[i] = g / (1 + float32(math.Exp(float64(-g)))) * up[i]
	}
}

func addTo(dst, x []float32) {
	for i, v := range x {
		dst[i] += v
	}
}
