// Package testutil locates the shared, read-only test assets (../shared/testdata
// beside the repository root) for tests. A missing asset fails the test; it is
// never skipped and never downloaded.
package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// RepoRoot returns the directory holding go.mod, searching upwards from the
// working directory of the test.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatalf("go.mod not found above the test's working directory")
		}
		dir = parent
	}
}

// Shared returns the absolute path of ../shared/testdata/<elem...>, failing the
// test if it does not exist.
func Shared(tb testing.TB, elem ...string) string {
	tb.Helper()
	p := filepath.Join(append([]string{RepoRoot(tb), "..", "shared", "testdata"}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("shared test asset missing: %v (tests read ../shared/testdata beside the repository)", err)
	}
	return p
}
