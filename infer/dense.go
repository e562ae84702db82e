package infer

import (
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas/gonum"
)

// Dense is a row-major float32 matrix; it serves as Linear and as Embedding.
type Dense struct {
	R, C int
	W    []float32 // R*C values, row r at W[r*C:(r+1)*C]
}

// NewDense wraps w (rows*cols values) without copying.
func NewDense(w []float32, rows, cols int) *Dense {
	return &Dense{R: rows, C: cols, W: w}
}

// Rows implements Linear.
func (d *Dense) Rows() int { return d.R }

// Cols implements Linear.
func (d *Dense) Cols() int { return d.C }

// Row implements Embedding.
func (d *Dense) Row(dst []float32, i int) { copy(dst, d.W[i*d.C:(i+1)*d.C]) }

// MatMul implements Linear. Rows are split across goroutines; each weight row
// is read once and applied to all n activation rows while it is in cache, so
// the cost is one pass over the weights however many tokens are batched.
func (d *Dense) MatMul(dst, x []float32, n int) {
	rows, cols := d.R, d.C
	ParallelFor(rows, cols*n, func(lo, hi int) {
		var impl gonum.Implementation
		for r := lo; r < hi; r++ {
			w := d.W[r*cols : (r+1)*cols]
			for t := 0; t < n; t++ {
				dst[t*rows+r] = impl.Sdot(cols, w, 1, x[t*cols:(t+1)*cols], 1)
			}
		}
	})
}

// ParallelFor splits [0, n) into contiguous chunks run on up to GOMAXPROCS
// goroutines and waits for them. Each item costs about cost multiply-adds;
// work too small to pay for a goroutine runs on the caller's.
func ParallelFor(n, cost int, fn func(lo, hi int)) {
	const minWork = 1 << 15 // multiply-adds per goroutine worth starting one for
	threads := min(runtime.GOMAXPROCS(0), n, max(1, n*max(cost, 1)/minWork))
	if threads <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + threads - 1) / threads
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}
