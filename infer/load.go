package infer

import (
	"fmt"

	"qllama/format/hf"
)

// FromHFConfig maps a Hugging Face config to the runtime's Config.
func FromHFConfig(hc *hf.Config) Config {
	return Config{
		Dim:         hc.HiddenSize,
		FFNDim:      hc.IntermediateSize,
		Layers:      hc.NumHiddenLayers,
		Heads:       hc.NumAttentionHeads,
		KVHeads:     hc.NumKeyValueHeads,
		HeadDim:     hc.HeadDim,
		Vocab:       hc.VocabSize,
		MaxSeq:      hc.MaxPositionEmbeddings,
		NormEps:     float32(hc.RMSNormEps),
		RopeInvFreq: hc.RopeInvFreq(),
		BOS:         hc.BOSTokenID,
		EOS:         append([]int(nil), hc.EOSTokenIDs...),
	}
}

// LoadHF builds a float32 model from an opened Hugging Face checkpoint
// (weights are converted from F32/F16/BF16 to float32 copies).
func LoadHF(src *hf.Model) (*Model, error) {
	m := &Model{Config: FromHFConfig(src.Config)}
	c := &m.Config
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", src.Dir, err)
	}
	var err error
	dense := func(name string, rows, cols int) *Dense {
		if err != nil {
			return nil
		}
		var w []float32
		w, err = src.Float32(name)
		if err == nil && len(w) != rows*cols {
			err = fmt.Errorf("%s: tensor %s has %d values, want %d x %d", src.Dir, name, len(w), rows, cols)
		}
		return NewDense(w, rows, cols)
	}
	vec := func(name string, n int) []float32 {
		d := dense(name, 1, n)
		if d == nil {
			return nil
		}
		return d.W
	}
	q, kv := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	embed := dense(hf.EmbedName, c.Vocab, c.Dim)
	m.Embed = embed
	m.Layers = make([]Layer, c.Layers)
	for i := range m.Layers {
		name := func(s string) string { return hf.LayerTensorName(i, s) }
		m.Layers[i] = Layer{
			AttnNorm: vec(name("input_layernorm.weight"), c.Dim),
			Q:        dense(name("self_attn.q_proj.weight"), q, c.Dim),
			K:        dense(name("self_attn.k_proj.weight"), kv, c.Dim),
			V:        dense(name("self_attn.v_proj.weight"), kv, c.Dim),
			O:        dense(name("self_attn.o_proj.weight"), c.Dim, q),
			FFNNorm:  vec(name("post_attention_layernorm.weight"), c.Dim),
			Gate:     dense(name("mlp.gate_proj.weight"), c.FFNDim, c.Dim),
			Up:       dense(name("mlp.up_proj.weight"), c.FFNDim, c.Dim),
			Down:     dense(name("mlp.down_proj.weight"), c.Dim, c.FFNDim),
		}
	}
	m.Norm = vec(hf.NormName, c.Dim)
	if _, _, terr := src.Tensor(hf.LMHeadName); terr == nil {
		m.Output = dense(hf.LMHeadName, c.Vocab, c.Dim)
	} else if src.Config.TieWordEmbeddings {
		m.Output = embed
	} else {
		return nil, fmt.Errorf("%s: %s is missing and tie_word_embeddings is false", src.Dir, hf.LMHeadName)
	}
	if err != nil {
		return nil, err
	}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("%s: %w", src.Dir, err)
	}
	return m, nil
}
