//go:build cuda

package cuda

import (
	"fmt"
	"math"

	"gorgonia.org/cu"

	"qllama/infer"
)

const (
	topKMax     = 256  // TOPK_MAX of kernels/sample.cu: the most candidates per row
	topKThreads = 1024 // threads per topk block (one block per row)
)

// candK is the most candidates per row that Generate copies back for a
// sampled row instead of the whole logits row; a request whose sampler needs
// more (TopK 0 or above candK) gets its whole row. 0 turns the device-side
// top-k off (tests compare both paths).
var candK = 64

// topK launches the topk kernel on rows logits rows of vocab values: row i's
// k largest values, descending (the lowest index first among equal values),
// go to vals[i*k+j] and their indices to ids[i*k+j] (int32); slots past the
// vocabulary get -inf and -1.
func (d *Device) topK(logits cu.DevicePtr, rows, vocab, k int, vals, ids cu.DevicePtr) error {
	if k <= 0 || k > topKMax {
		return fmt.Errorf("cuda: top-k of %d candidates: the kernel keeps 1 to %d", k, topKMax)
	}
	return d.launch("topk", dim3{x: rows}, topKThreads, 0, logits, vals, ids, int64(rows), int64(vocab), int64(k))
}

// candidates is the device buffer the top-k kernel writes: rows*k values,
// then rows*k ids.
type candidates struct {
	ptr   cu.DevicePtr
	bytes int64
	host  []uint32
}

func (c *candidates) free(g *Model) {
	if c.ptr != 0 {
		defer g.d.bind()()
		cu.MemFree(c.ptr)
	}
	*c = candidates{}
}

// sample runs steps (the last token of each) and draws each step's next id
// with its sampler. A row whose sampler looks at no more than candK of the
// largest logits (greedy, or TopK <= candK) gets them from the device-side
// top-k, k floats and k ids back instead of the whole row, and draws with
// infer.Sampler.SampleTop (the same id as Sample on the row); the other rows
// copy their whole row back and use Sample.
func (g *Model) sample(steps []Step, samplers []*infer.Sampler, cand *candidates) ([]int, error) {
	defer g.d.bind()()
	nsel, err := g.runLast(steps)
	if err != nil {
		return nil, err
	}
	if nsel != len(samplers) {
		return nil, fmt.Errorf("cuda: sample: %d logits rows for %d samplers", nsel, len(samplers))
	}
	V := g.Vocab
	k := 0
	full := make([]bool, nsel)
	for i, s := range samplers {
		if need := s.TopCandidates(); need > 0 && need <= candK {
			k = max(k, min(need, V))
		} else {
			full[i] = true
		}
	}
	if k > 0 {
		if err := g.ensure(&cand.ptr, &cand.bytes, int64(nsel)*int64(k)*8, "sampling candidates"); err != nil {
			return nil, err
		}
		ids := cand.ptr + cu.DevicePtr(int64(nsel)*int64(k)*4)
		if err := g.d.topK(g.buf.logits, nsel, V, k, cand.ptr, ids); err != nil {
			return nil, err
		}
	}
	if err := g.d.st.sync(); err != nil {
		return nil, err
	}
	if k > 0 {
		if n := 2 * nsel * k; cap(cand.host) >= n {
			cand.host = cand.host[:n]
		} else {
			cand.host = make([]uint32, n)
		}
		if err := download(cand.host, cand.ptr); err != nil {
			return nil, err
		}
	}
	out := make([]int, nsel)
	var row []float32
	vals := make([]float32, k)
	ids := make([]int, k)
	for i, s := range samplers {
		if full[i] {
			if row == nil {
				row = make([]float32, V)
			}
			if err := download(row, g.buf.logits+cu.DevicePtr(int64(i)*int64(V)*4)); err != nil {
				return nil, err
			}
			out[i] = s.Sample(row)
			continue
		}
		for j := range k {
			vals[j] = math.Float32frombits(cand.host[i*k+j])
			ids[j] = int(int32(cand.host[nsel*k+i*k+j]))
		}
		out[i] = s.SampleTop(vals, ids)
	}
	return out, nil
}
