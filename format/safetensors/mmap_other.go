//go:build !unix

package safetensors

import (
	"io"
	"os"
)

// mmapFile reads f into memory where memory mapping is unavailable.
func mmapFile(f *os.File, size int64) ([]byte, func() error, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, size), b); err != nil {
		return nil, nil, err
	}
	return b, func() error { return nil }, nil
}
