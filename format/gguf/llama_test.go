package gguf

import (
	"math"
	"slices"
	"testing"
)

func TestLlamaNames(t *testing.T) {
	tests := []struct{ hf, gguf string }{
		{"model.embed_tokens.weight", "token_embd.weight"},
		{"model.norm.weight", "output_norm.weight"},
		{"lm_head.weight", "output.weight"},
		{"model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"},
		{"model.layers.31.self_attn.k_proj.weight", "blk.31.attn_k.weight"},
		{"model.layers.7.self_attn.v_proj.weight", "blk.7.attn_v.weight"},
		{"model.layers.7.self_attn.o_proj.weight", "blk.7.attn_output.weight"},
		{"model.layers.10.mlp.gate_proj.weight", "blk.10.ffn_gate.weight"},
		{"model.layers.10.mlp.up_proj.weight", "blk.10.ffn_up.weight"},
		{"model.layers.10.mlp.down_proj.weight", "blk.10.ffn_down.weight"},
		{"model.layers.2.input_layernorm.weight", "blk.2.attn_norm.weight"},
		{"model.layers.2.post_attention_layernorm.weight", "blk.2.ffn_norm.weight"},
		// Parameter suffixes and quantized components carry over.
		{"model.layers.3.self_attn.q_proj.bias", "blk.3.attn_q.bias"},
		{"model.layers.3.self_attn.q_proj.qweight", "blk.3.attn_q.qweight"},
		{"model.layers.3.mlp.down_proj.weight.absmax", "blk.3.ffn_down.weight.absmax"},
	}
	for _, tt := range tests {
		if got, ok := GGUFName(tt.hf); !ok || got != tt.gguf {
			t.Errorf("GGUFName(%q) = %q, %v; want %q", tt.hf, got, ok, tt.gguf)
		}
		if got, ok := HFName(tt.gguf); !ok || got != tt.hf {
			t.Errorf("HFName(%q) = %q, %v; want %q", tt.gguf, got, ok, tt.hf)
		}
	}
	for _, bad := range []string{
		"", "model.embed_tokens", "model.layers.x.self_attn.q_proj.weight", "model.layers.01.mlp.up_proj.weight",
		"model.layers.-1.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.", "model.rotary_emb.inv_freq",
		"model.layers.0.mlp.act_fn.weight", "rope_freqs.weight", "blk.0.attn_q",
	} {
		if got, ok := GGUFName(bad); ok {
			t.Errorf("GGUFName(%q) = %q, want no mapping", bad, got)
		}
		if got, ok := HFName(bad); ok {
			t.Errorf("HFName(%q) = %q, want no mapping", bad, got)
		}
	}
	// The list is a bijection: no two pairs share a side.
	hf, gg := map[string]bool{}, map[string]bool{}
	for _, p := range LlamaNames {
		if hf[p.HF] || gg[p.GGUF] {
			t.Errorf("pair %v repeats a name", p)
		}
		hf[p.HF], gg[p.GGUF] = true, true
	}
	// The longest llama.cpp name for a 3-digit layer fits the writer's limit.
	if n := len("blk.999.attn_output.weight.scales"); n > MaxTensorNameLen {
		t.Errorf("component name of %d bytes exceeds the limit", n)
	}
}

func TestPermuteQKHandExample(t *testing.T) {
	// 2 heads of head_dim 4: within each head rows [0 1 | 2 3] become
	// [0 2 1 3] (the two rotary halves interleaved).
	w := []float32{0, 1, 2, 3, 4, 5, 6, 7}
	got, err := PermuteQK(w, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{0, 2, 1, 3, 4, 6, 5, 7}; !slices.Equal(got, want) {
		t.Errorf("PermuteQK = %v, want %v", got, want)
	}
	// 1 head of head_dim 6, rows of 2 columns: rows [0 1 2 | 3 4 5] become
	// [0 3 1 4 2 5], moving both columns of each row.
	w = []float32{0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5}
	got, err = PermuteQK(w, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{0, 0.5, 3, 3.5, 1, 1.5, 4, 4.5, 2, 2.5, 5, 5.5}; !slices.Equal(got, want) {
		t.Errorf("PermuteQK = %v, want %v", got, want)
	}
}

func TestPermuteQKInverse(t *testing.T) {
	tests := []struct{ rows, rowLen, nHead int }{
		{8, 1, 2}, {64, 16, 8}, {32, 16, 4}, {16, 3, 1}, {2, 5, 1},
	}
	for _, tt := range tests {
		w := make([]float32, tt.rows*tt.rowLen)
		for i := range w {
			w[i] = float32(i)
		}
		p, err := PermuteQK(w, tt.rowLen, tt.nHead)
		if err != nil {
			t.Fatal(err)
		}
		back, err := UnpermuteQK(p, tt.rowLen, tt.nHead)
		if err != nil || !slices.Equal(back, w) {
			t.Errorf("%+v: UnpermuteQK(PermuteQK(w)) != w (%v)", tt, err)
		}
		u, _ := UnpermuteQK(w, tt.rowLen, tt.nHead)
		if again, _ := PermuteQK(u, tt.rowLen, tt.nHead); !slices.Equal(again, w) {
			t.Errorf("%+v: PermuteQK(UnpermuteQK(w)) != w", tt)
		}
		if tt.rows > 2 && slices.Equal(p, w) {
			t.Errorf("%+v: permutation is the identity", tt)
		}
	}
	// Packed rows: 8 rows of Q8_0 with 64 columns = 2 blocks = 68 bytes/row.
	rowBytes, _ := TypeQ8_0.RowBytes(64)
	packed := pattern(8*rowBytes, 9)
	p, err := PermuteQK(packed, int(rowBytes), 2)
	if err != nil {
		t.Fatal(err)
	}
	back, _ := UnpermuteQK(p, int(rowBytes), 2)
	if !slices.Equal(back, packed) {
		t.Error("packed rows do not round trip")
	}
	// Row 1 of the output is row 2 of the input (head_dim 4, half 2).
	if !slices.Equal(p[rowBytes:2*rowBytes], packed[2*rowBytes:3*rowBytes]) {
		t.Error("packed row 1 is not input row 2")
	}
	// GQA: K must use the KV head count; a different count is a different
	// permutation (the Llama-2-70B bug, llama.cpp#2376).
	k := make([]float32, 16)
	for i := range k {
		k[i] = float32(i)
	}
	a, _ := PermuteQK(k, 1, 2)
	b, _ := PermuteQK(k, 1, 4)
	if slices.Equal(a, b) {
		t.Error("head count does not change the permutation")
	}
}

func TestPermuteQKErrors(t *testing.T) {
	tests := []struct {
		n, rowLen, nHead int
	}{
		{8, 0, 2},  // no row length
		{9, 2, 1},  // not whole rows
		{6, 1, 2},  // 6 rows are not 2×2 heads × even
		{8, 1, 0},  // no heads
		{0, 1, 1},  // no rows
		{8, 1, -2}, // negative heads
	}
	for _, tt := range tests {
		if _, err := PermuteQK(make([]float32, tt.n), tt.rowLen, tt.nHead); err == nil {
			t.Errorf("PermuteQK(len %d, rowLen %d, heads %d) succeeded", tt.n, tt.rowLen, tt.nHead)
		}
	}
}

// TestPermuteQKMatchesRoPE checks what the permutation is for: Hugging Face
// applies "rotate_half" RoPE (pairs i, i+hd/2) and llama.cpp's Llama graph
// applies adjacent-pair RoPE (pairs 2j, 2j+1). With the permuted weights,
// llama.cpp's rotation of P·q must equal P applied to HF's rotation of q.
func TestPermuteQKMatchesRoPE(t *testing.T) {
	const nHead, hd, pos, base = 3, 8, 5.0, 10000.0
	q := make([]float64, nHead*hd)
	for i := range q {
		q[i] = math.Sin(float64(i)*1.7) + 0.1*float64(i)
	}
	theta := func(j int) float64 { return pos * math.Pow(base, -2*float64(j)/hd) }
	hfRope := func(x []float64) []float64 {
		out := make([]float64, len(x))
		for h := 0; h < nHead; h++ {
			v := x[h*hd : (h+1)*hd]
			for j := 0; j < hd/2; j++ {
				c, s := math.Cos(theta(j)), math.Sin(theta(j))
				out[h*hd+j] = v[j]*c - v[j+hd/2]*s
				out[h*hd+j+hd/2] = v[j+hd/2]*c + v[j]*s
			}
		}
		return out
	}
	ggmlRope := func(x []float64) []float64 {
		out := make([]float64, len(x))
		for h := 0; h < nHead; h++ {
			v := x[h*hd : (h+1)*hd]
			for j := 0; j < hd/2; j++ {
				c, s := math.Cos(theta(j)), math.Sin(theta(j))
				out[h*hd+2*j] = v[2*j]*c - v[2*j+1]*s
				out[h*hd+2*j+1] = v[2*j+1]*c + v[2*j]*s
			}
		}
		return out
	}
	pq, err := PermuteQK(q, 1, nHead)
	if err != nil {
		t.Fatal(err)
	}
	got := ggmlRope(pq)
	want, _ := PermuteQK(hfRope(q), 1, nHead)
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("element %d: llama.cpp RoPE of permuted q = %v, permuted HF RoPE = %v", i, got[i], want[i])
		}
	}
}
