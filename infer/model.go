// Package infer is the reference Llama runtime: a float32 forward pass written
// once against opaque weight matrices (Linear), with a KV cache per sequence,
// batching of many sequences in one step, and greedy or sampled decoding.
//
// Weights may be stored in any format: a Linear only has to multiply itself
// with activations. Dense float32 weights are provided here; packed formats
// plug in through the same interface, so there is one forward pass for all of
// them.
package infer

import (
	"errors"
	"fmt"
)

// Config holds the hyper-parameters the runtime needs, independent of the file
// the model came from.
type Config struct {
	Dim         int       // hidden size
	FFNDim      int       // intermediate size of the SwiGLU MLP
	Layers      int       // decoder blocks
	Heads       int       // query heads
	KVHeads     int       // key/value heads (grouped-query attention)
	HeadDim     int       // per-head size
	Vocab       int       // vocabulary size (rows of the embedding and lm_head)
	MaxSeq      int       // max_position_embeddings
	NormEps     float32   // RMSNorm epsilon
	RopeInvFreq []float64 // HeadDim/2 rotary inverse frequencies, scaling applied
	BOS         int       // beginning-of-sequence id, -1 if none
	EOS         []int     // end-of-sequence ids
}

// Validate reports an inconsistent configuration.
func (c *Config) Validate() error {
	switch {
	case c.Dim <= 0 || c.FFNDim <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.HeadDim <= 0 || c.Vocab <= 0:
		return fmt.Errorf("config: dimensions must be positive (dim %d, ffn %d, layers %d, heads %d, kv heads %d, head dim %d, vocab %d)",
			c.Dim, c.FFNDim, c.Layers, c.Heads, c.KVHeads, c.HeadDim, c.Vocab)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("config: %d heads is not a multiple of %d kv heads", c.Heads, c.KVHeads)
	case c.HeadDim%2 != 0:
		return fmt.Errorf("config: head dim %d is odd", c.HeadDim)
	case len(c.RopeInvFreq) != c.HeadDim/2:
		return fmt.Errorf("config: %d rope frequencies for head dim %d", len(c.RopeInvFreq), c.HeadDim)
	}
	return nil
}

// Linear is a weight matrix W of Rows() x Cols() in some storage format.
type Linear interface {
	Rows() int
	Cols() int
	// MatMul computes dst[t*Rows()+r] = sum_c W[r][c] * x[t*Cols()+c] for the
	// n activation rows in x. Implementations may use several goroutines.
	MatMul(dst, x []float32, n int)
}

// Embedding is a token-embedding table in some storage format.
type Embedding interface {
	Rows() int
	Cols() int
	// Row writes row i, as float32, into dst (len Cols()).
	Row(dst []float32, i int)
}

// Layer is one decoder block.
type Layer struct {
	AttnNorm []float32 // [Dim]
	Q        Linear    // [Heads*HeadDim, Dim]
	K        Linear    // [KVHeads*HeadDim, Dim]
	V        Linear    // [KVHeads*HeadDim, Dim]
	O        Linear    // [Dim, Heads*HeadDim]
	FFNNorm  []float32 // [Dim]
	Gate     Linear    // [FFNDim, Dim]
	Up       Linear    // [FFNDim, Dim]
	Down     Linear    // [Dim, FFNDim]
}

// Model is a Llama model ready to run.
type Model struct {
	Config
	Embed  Embedding // [Vocab, Dim]
	Layers []Layer
	Norm   []float32 // [Dim]
	Output Linear    // lm_head [Vocab, Dim]; may share storage with Embed when tied
}

// Check verifies that every weight has the shape the configuration implies.
func (m *Model) Check() error {
	if err := m.Config.Validate(); err != nil {
		return err
	}
	c := &m.Config
	var errs []error
	lin := func(name string, l Linear, rows, cols int) {
		if l == nil {
			errs = append(errs, fmt.Errorf("%s: missing", name))
			return
		}
		if l.Rows() != rows || l.Cols() != cols {
			errs = append(errs, fmt.Errorf("%s: shape [%d %d], config implies [%d %d]", name, l.Rows(), l.Cols(), rows, cols))
		}
	}
	vec := func(name string, v []float32, n int) {
		if len(v) != n {
			errs = append(errs, fmt.Errorf("%s: length %d, config implies %d", name, len(v), n))
		}
	}
	if m.Embed == nil || m.Embed.Rows() != c.Vocab || m.Embed.Cols() != c.Dim {
		errs = append(errs, fmt.Errorf("embedding: missing or not [%d %d]", c.Vocab, c.Dim))
	}
	if len(m.Layers) != c.Layers {
		errs = append(errs, fmt.Errorf("%d layers, config says %d", len(m.Layers), c.Layers))
	}
	q, kv := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	for i := range m.Layers {
		l := &m.Layers[i]
		p := fmt.Sprintf("layer %d ", i)
		vec(p+"attn norm", l.AttnNorm, c.Dim)
		vec(p+"ffn norm", l.FFNNorm, c.Dim)
		lin(p+"q", l.Q, q, c.Dim)
		lin(p+"k", l.K, kv, c.Dim)
		lin(p+"v", l.V, kv, c.Dim)
		lin(p+"o", l.O, c.Dim, q)
		lin(p+"gate", l.Gate, c.FFNDim, c.Dim)
		lin(p+"up", l.Up, c.FFNDim, c.Dim)
		lin(p+"down", l.Down, c.Dim, c.FFNDim)
	}
	vec("output norm", m.Norm, c.Dim)
	lin("output", m.Output, c.Vocab, c.Dim)
	return errors.Join(errs...)
}

// IsEOS reports whether id ends a sequence.
func (c *Config) IsEOS(id int) bool {
	for _, e := range c.EOS {
		if e == id {
			return true
		}
	}
	return false
}
