package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"qllama/internal/testutil"
)

func TestQReport(t *testing.T) {
	results := filepath.Join(testutil.RepoRoot(t), "eval", "report", "testdata", "results")
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	if err := newApp(&stdout, &stderr).Run([]string{"qreport", "--results", results, "--out", out, "--title", "T"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "8 figures") {
		t.Errorf("stdout %q", stdout.String())
	}
	for _, f := range []string{"report.html", "report.md", "summary.csv", "figures/f1_vs_bpw.png", "figures/throughput.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, args := range [][]string{
		{"qreport", "--out", out},
		{"qreport", "--results", results},
		{"qreport", "--results", filepath.Join(out, "none"), "--out", out},
		{"qreport", "--results", results, "--out", out, "extra"},
	} {
		if err := newApp(&stdout, &stderr).Run(args); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
