package infer

import (
	"fmt"
	"math"
)

// KVCache holds the keys and values of one sequence for every layer, as
// Len rows of KVHeads*HeadDim float32 values per layer.
type KVCache struct {
	Len   int
	k, v  [][]float32 // [layer][pos*kvDim + i]
	kvDim int
}

// NewKVCache returns an empty cache shaped for c.
func NewKVCache(c *Config) *KVCache {
	return &KVCache{k: make([][]float32, c.Layers), v: make([][]float32, c.Layers), kvDim: c.KVHeads * c.HeadDim}
}

// Truncate forgets every position at or after n.
func (kv *KVCache) Truncate(n int) {
	if n >= kv.Len {
		return
	}
	n = max(n, 0)
	for l := range kv.k {
		kv.k[l] = kv.k[l][:n*kv.kvDim]
		kv.v[l] = kv.v[l][:n*kv.kvDim]
	}
	kv.Len = n
}

// CopyPrefix makes kv hold the first n positions of src (a shared prompt
// prefix), discarding what kv held.
func (kv *KVCache) CopyPrefix(src *KVCache, n int) {
	n = min(n, src.Len)
	for l := range kv.k {
		kv.k[l] = append(kv.k[l][:0], src.k[l][:n*kv.kvDim]...)
		kv.v[l] = append(kv.v[l][:0], src.v[l][:n*kv.kvDim]...)
	}
	kv.Len = n
}

// Bytes is the memory the cache holds.
func (kv *KVCache) Bytes() int64 {
	var n int64
	for l := range kv.k {
		n += int64(cap(kv.k[l])+cap(kv.v[l])) * 4
	}
	return n
}

// Step is one sequence's share of a batched forward pass: new tokens appended
// after the positions already in Cache.
type Step struct {
	Cache     *KVCache
	Tokens    []int
	AllLogits bool // logits for every new token, not only the last
}

// Runner runs forward passes of one model and owns the scratch buffers, which
// grow to the largest batch seen and are reused. A Runner is not safe for
// concurrent use; make one per goroutine.
type Runner struct {
	M *Model
	// prefixes holds the keys and values of recent prompts per request
	// group (most recent last), for Generate's prefix reuse.
	prefixes []prefixEntry
	buf      struct {
		x, xn, q, k, v, att, gate, up []float32
		sel, logits                   []float32
		cos, sin                      []float32
		scores                        []float32
	}
}

// NewRunner returns a Runner for m.
func NewRunner(m *Model) *Runner { return &Runner{M: m} }

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// Forward runs the new tokens of every step through the model, appends their
// keys and values to each step's cache, and returns logits: for each step one
// row per new token when AllLogits is set, else one row for its last token.
// Each returned row has Vocab values and is freshly allocated.
func (r *Runner) Forward(steps []Step) ([][][]float32, error) {
	m := r.M
	c := &m.Config
	n := 0
	for i, s := range steps {
		if len(s.Tokens) == 0 {
			return nil, fmt.Errorf("forward: step %d has no tokens", i)
		}
		if s.Cache == nil {
			return nil, fmt.Errorf("forward: step %d has no cache", i)
		}
		for _, id := range s.Tokens {
			if id < 0 || id >= c.Vocab {
				return nil, fmt.Errorf("forward: token id %d outside the vocabulary [0, %d)", id, c.Vocab)
			}
		}
		n += len(s.Tokens)
	}
	dim, qDim, kvDim, hd, half := c.Dim, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim, c.HeadDim, c.HeadDim/2
	b := &r.buf
	b.x, b.xn = grow(b.x, n*dim), grow(b.xn, n*dim)
	b.q, b.att = grow(b.q, n*qDim), grow(b.att, n*qDim)
	b.k, b.v = grow(b.k, n*kvDim), grow(b.v, n*kvDim)
	b.gate, b.up = grow(b.gate, n*c.FFNDim), grow(b.up, n*c.FFNDim)
	b.cos, b.sin = grow(b.cos, n*half), grow(b.sin, n*half)

	// Row t of the batch belongs to sequence seq[t] at absolute position pos[t].
	seq := make([]int, n)
	pos := make([]int, n)
	t := 0
	for i, s := range steps {
		for j, id := range s.Tokens {
			seq[t], pos[t] = i, s.Cache.Len+j
			m.Embed.Row(b.x[t*dim:(t+1)*dim], id)
			ropeTable(b.cos[t*half:(t+1)*half], b.sin[t*half:(t+1)*half], c.RopeInvFreq, pos[t])
			t++
		}
	}
	maxLen := 0
	for _, s := range steps {
		maxLen = max(maxLen, s.Cache.Len+len(s.Tokens))
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	group := c.Heads / c.KVHeads

	for l := range m.Layers {
		L := &m.Layers[l]
		for t := 0; t < n; t++ {
			rmsNorm(b.xn[t*dim:(t+1)*dim], b.x[t*dim:(t+1)*dim], L.AttnNorm, c.NormEps)
		}
		L.Q.MatMul(b.q, b.xn, n)
		L.K.MatMul(b.k, b.xn, n)
		L.V.MatMul(b.v, b.xn, n)
		for t := 0; t < n; t++ {
			cs, sn := b.cos[t*half:(t+1)*half], b.sin[t*half:(t+1)*half]
			rope(b.q[t*qDim:(t+1)*qDim], c.Heads, hd, cs, sn)
			rope(b.k[t*kvDim:(t+1)*kvDim], c.KVHeads, hd, cs, sn)
		}
		t := 0
		for _, s := range steps {
			kc := s.Cache
			kc.k[l] = append(kc.k[l], b.k[t*kvDim:(t+len(s.Tokens))*kvDim]...)
			kc.v[l] = append(kc.v[l], b.v[t*kvDim:(t+len(s.Tokens))*kvDim]...)
			t += len(s.Tokens)
		}
		// Causal grouped-query attention, one task per (row, head).
		ParallelFor(n*c.Heads, 2*maxLen*hd, func(lo, hi int) {
			scores := make([]float32, maxLen)
			for task := lo; task < hi; task++ {
				t, h := task/c.Heads, task%c.Heads
				kc := steps[seq[t]].Cache
				kh := h / group
				q := b.q[t*qDim+h*hd : t*qDim+(h+1)*hd]
				npos := pos[t] + 1
				sc := scores[:npos]
				keys := kc.k[l]
				for p := 0; p < npos; p++ {
					k := keys[p*kvDim+kh*hd : p*kvDim+(kh+1)*hd]
					var dot float32
					for i, qv := range q {
						dot += qv * k[i]
					}
					sc[p] = dot * scale
				}
				softmax(sc)
				out := b.att[t*qDim+h*hd : t*qDim+(h+1)*hd]
				clear(out)
				vals := kc.v[l]
				for p, w := range sc {
					v := vals[p*kvDim+kh*hd : p*kvDim+(kh+1)*hd]
					for i := range out {
						out[i] += w * v[i]
					}
				}
			}
		})
		L.O.MatMul(b.xn, b.att, n)
		addTo(b.x[:n*dim], b.xn[:n*dim])

		for t := 0; t < n; t++ {
			rmsNorm(b.xn[t*dim:(t+1)*dim], b.x[t*dim:(t+1)*dim], L.FFNNorm, c.NormEps)
		}
		L.Gate.MatMul(b.gate, b.xn, n)
		L.Up.MatMul(b.up, b.xn, n)
		swiglu(b.gate[:n*c.FFNDim], b.up[:n*c.FFNDim])
		L.Down.MatMul(b.xn, b.gate, n)
		addTo(b.x[:n*dim], b.xn[:n*dim])
	}
	for _, s := range steps {
		s.Cache.Len += len(s.Tokens)
	}

	// Final norm and lm_head only on the rows whose logits are wanted.
	var rows []int
	t = 0
	for _, s := range steps {
		if s.AllLogits {
			for j := range s.Tokens {
				rows = append(rows, t+j)
			}
		} else {
			rows = append(rows, t+len(s.Tokens)-1)
		}
		t += len(s.Tokens)
	}
	b.sel = grow(b.sel, len(rows)*dim)
	for i, t := range rows {
		rmsNorm(b.sel[i*dim:(i+1)*dim], b.x[t*dim:(t+1)*dim], m.Norm, c.NormEps)
	}
	logits := make([]float32, len(rows)*c.Vocab)
	m.Output.MatMul(logits, b.sel, len(rows))
	counts := make([]int, len(steps))
	for i, s := range steps {
		counts[i] = 1
		if s.AllLogits {
			counts[i] = len(s.Tokens)
		}
	}
	return SplitLogits(logits, c.Vocab, counts), nil
}

// SplitLogits cuts consecutive rows of vocab logits into per-step groups of
// counts[i] rows (Forward's result shape); the rows alias logits.
func SplitLogits(logits []float32, vocab int, counts []int) [][][]float32 {
	out := make([][][]float32, len(counts))
	i := 0
	for si, k := range counts {
		out[si] = make([][]float32, k)
		for j := range k {
			out[si][j] = logits[i*vocab : (i+1)*vocab : (i+1)*vocab]
			i++
		}
	}
	return out
}
