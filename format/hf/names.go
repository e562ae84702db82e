package hf

import (
	"fmt"
	"strconv"
	"strings"
)

// Names of the model-level tensors of a Hugging Face Llama checkpoint.
const (
	EmbedName  = "model.embed_tokens.weight" // [vocab, hidden]
	NormName   = "model.norm.weight"         // [hidden]
	LMHeadName = "lm_head.weight"            // [vocab, hidden]; may be absent when tied
)

// Suffixes of the per-layer tensors, for [LayerTensorName].
const (
	AttnNorm = "input_layernorm.weight"          // [hidden]
	AttnQ    = "self_attn.q_proj.weight"         // [heads*head_dim, hidden]
	AttnK    = "self_attn.k_proj.weight"         // [kv_heads*head_dim, hidden]
	AttnV    = "self_attn.v_proj.weight"         // [kv_heads*head_dim, hidden]
	AttnO    = "self_attn.o_proj.weight"         // [hidden, heads*head_dim]
	FFNNorm  = "post_attention_layernorm.weight" // [hidden]
	FFNGate  = "mlp.gate_proj.weight"            // [intermediate, hidden]
	FFNUp    = "mlp.up_proj.weight"              // [intermediate, hidden]
	FFNDown  = "mlp.down_proj.weight"            // [hidden, intermediate]

	// RotaryInvFreq is a buffer some old checkpoints carry per layer; it is
	// recomputed from the config and ignored when found.
	RotaryInvFreq = "self_attn.rotary_emb.inv_freq"
)

const layerPrefix = "model.layers."

// LayerSuffixes returns the per-layer tensor suffixes in file order.
func LayerSuffixes() []string {
	return []string{AttnNorm, AttnQ, AttnK, AttnV, AttnO, FFNNorm, FFNGate, FFNUp, FFNDown}
}

// LayerTensorName returns "model.layers.<layer>.<suffix>".
func LayerTensorName(layer int, suffix string) string {
	return layerPrefix + strconv.Itoa(layer) + "." + suffix
}

// ParseLayerTensorName splits "model.layers.<layer>.<suffix>" into its layer
// and suffix; ok is false for names of any other form.
func ParseLayerTensorName(name string) (layer int, suffix string, ok bool) {
	rest, found := strings.CutPrefix(name, layerPrefix)
	if !found {
		return 0, "", false
	}
	num, suffix, found := strings.Cut(rest, ".")
	if !found || suffix == "" || num == "" || (len(num) > 1 && num[0] == '0') {
		return 0, "", false
	}
	layer, err := strconv.Atoi(num)
	if err != nil || layer < 0 {
		return 0, "", false
	}
	return layer, suffix, true
}

// ExpectedTensor is a tensor a Llama checkpoint must (or, if Optional, may)
// hold, with the shape the config implies in PyTorch order (rows first).
type ExpectedTensor struct {
	Name     string
	Shape    []int64
	Optional bool
}

// ExpectedTensors lists the tensors of the model c describes: the embedding,
// each layer's tensors in [LayerSuffixes] order, the final norm and lm_head
// (Optional when embeddings are tied).
func (c *Config) ExpectedTensors() []ExpectedTensor {
	h, inter, v := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.VocabSize)
	q, kv := int64(c.QDim()), int64(c.KVDim())
	shapes := map[string][]int64{
		AttnNorm: {h}, AttnQ: {q, h}, AttnK: {kv, h}, AttnV: {kv, h}, AttnO: {h, q},
		FFNNorm: {h}, FFNGate: {inter, h}, FFNUp: {inter, h}, FFNDown: {h, inter},
	}
	out := []ExpectedTensor{{Name: EmbedName, Shape: []int64{v, h}}}
	for l := 0; l < c.NumHiddenLayers; l++ {
		for _, s := range LayerSuffixes() {
			out = append(out, ExpectedTensor{Name: LayerTensorName(l, s), Shape: shapes[s]})
		}
	}
	return append(out,
		ExpectedTensor{Name: NormName, Shape: []int64{h}},
		ExpectedTensor{Name: LMHeadName, Shape: []int64{v, h}, Optional: c.TieWordEmbeddings})
}

// String formats e for messages.
func (e ExpectedTensor) String() string { return fmt.Sprintf("%s %v", e.Name, e.Shape) }
