package convert

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"qllama/format/hf"
)

// TensorReport describes one logical tensor of the written file.
type TensorReport struct {
	Name     string  `json:"name"`
	Class    string  `json:"class"` // ClassEmbed, ClassLinear, ClassHead, ClassNorm, ClassRope
	Type     string  `json:"type"`  // the scheme, e.g. "q4_0" or "rtn int4 g128 asym"
	Fallback string  `json:"fallback,omitempty"`
	Shape    []int64 `json:"shape"`
	Params   int64   `json:"params"`
	Bytes    int64   `json:"bytes"` // all stored components
	BPW      float64 `json:"bpw"`
	// RelRMSE is ||W - deq(W)|| / ||W|| in float64 over the whole tensor.
	RelRMSE float64 `json:"rel_rmse"`
}

// Report summarises a conversion.
type Report struct {
	Input    string         `json:"input"`
	Output   string         `json:"output"`
	Method   string         `json:"method"`
	LlamaCpp bool           `json:"llama_cpp_compatible"`
	Tensors  []TensorReport `json:"tensors"`
	// LinearBPW is stored bits per weight over the linear layers (attention
	// and MLP); FileBPW is 8 × file size over the model's parameter count
	// (tied embeddings counted once).
	LinearBPW    float64 `json:"linear_bpw"`
	FileBPW      float64 `json:"file_bpw"`
	Params       int64   `json:"params"`
	FileBytes    int64   `json:"file_bytes"`
	SourceBytes  int64   `json:"source_bytes"`
	Seconds      float64 `json:"seconds"`
	SourceMBPerS float64 `json:"source_mb_per_s"`

	mu sync.Mutex
}

func (r *Report) add(w *weight) {
	t := TensorReport{Name: w.name, Class: w.class, Type: w.scheme.String(), Fallback: w.fallback, RelRMSE: w.enc.err.rel()}
	if w.rows > 0 {
		t.Shape = []int64{int64(w.rows), int64(w.cols)}
		t.Params = int64(w.rows) * int64(w.cols)
	} else {
		t.Shape = []int64{int64(w.cols)}
		t.Params = int64(w.cols)
	}
	for _, b := range w.enc.data {
		t.Bytes += int64(len(b))
	}
	t.BPW = 8 * float64(t.Bytes) / float64(t.Params)
	r.mu.Lock()
	r.Tensors = append(r.Tensors, t)
	r.mu.Unlock()
}

func (r *Report) finish(c *hf.Config, src *hf.Model, fileBytes int64, el time.Duration) {
	var lb, lp int64
	for _, t := range r.Tensors {
		if t.Class == ClassLinear {
			lb += t.Bytes
			lp += t.Params
		}
	}
	if lp > 0 {
		r.LinearBPW = 8 * float64(lb) / float64(lp)
	}
	for _, n := range src.Names() {
		if ti, ok := src.Info(n); ok {
			if es, err := ti.DType.Size(); err == nil {
				r.SourceBytes += ti.NumElements() * int64(es)
			}
		}
	}
	r.Params = c.ParamCount()
	r.FileBytes = fileBytes
	r.FileBPW = 8 * float64(fileBytes) / float64(r.Params)
	r.Seconds = el.Seconds()
	if r.Seconds > 0 {
		r.SourceMBPerS = float64(r.SourceBytes) / 1e6 / r.Seconds
	}
}

// WriteTable prints the per-tensor table and the summary.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tensor\ttype\tshape\tbytes\tbpw\trel rmse\t")
	for _, t := range r.Tensors {
		typ := t.Type
		if t.Fallback != "" {
			typ += "*"
		}
		dims := make([]string, len(t.Shape))
		for i, d := range t.Shape {
			dims[i] = fmt.Sprint(d)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.3f\t%.3e\t\n", t.Name, typ, strings.Join(dims, "x"), t.Bytes, t.BPW, t.RelRMSE)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range r.Tensors {
		if t.Fallback != "" {
			fmt.Fprintf(w, "* %s: %s instead (%s)\n", t.Name, t.Type, t.Fallback)
		}
	}
	compat := "qllama only (component tensors)"
	if r.LlamaCpp {
		compat = "llama.cpp compatible"
	}
	_, err := fmt.Fprintf(w, "wrote %s: %.2f MB, %s\nbits per weight: linear layers %.3f, whole file %.3f (%d parameters)\nconverted %.1f MB in %.2fs (%.0f MB/s)\n",
		r.Output, float64(r.FileBytes)/1e6, compat, r.LinearBPW, r.FileBPW, r.Params,
		float64(r.SourceBytes)/1e6, r.Seconds, r.SourceMBPerS)
	return err
}
