package convert_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"qllama/convert"
	"qllama/convert/random"
)

// BenchmarkConvert1B writes `qconvert random --shape llama-3.2-1b` once
// (about 2.5 GB of BF16) and converts it to NF4 and to Q4_0, reporting the
// seconds per conversion and the source MB/s.
func BenchmarkConvert1B(b *testing.B) {
	shape, err := random.Lookup("llama-3.2-1b")
	if err != nil {
		b.Fatal(err)
	}
	tmp := b.TempDir()
	in := filepath.Join(tmp, "llama-3.2-1b")
	if err := random.Write(context.Background(), in, shape, random.Options{Seed: 1}); err != nil {
		b.Fatal(err)
	}
	for _, method := range []string{"nf4", "q4_0"} {
		b.Run(method, func(b *testing.B) {
			out := filepath.Join(tmp, method+".gguf")
			var rep *convert.Report
			for i := 0; i < b.N; i++ {
				rep, err = convert.Convert(context.Background(), convert.Options{In: in, Out: out, Method: method})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(rep.Seconds, "s/convert")
			b.ReportMetric(rep.SourceMBPerS, "MB/s")
			b.ReportMetric(rep.LinearBPW, "linear-bpw")
			b.ReportMetric(float64(rep.FileBytes)/1e6, "file-MB")
			os.Remove(out)
		})
	}
}
