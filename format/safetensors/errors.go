package safetensors

import (
	"errors"
	"fmt"
)

// ErrUnsupported is wrapped by errors about dtypes this package does not know
// or cannot convert.
var ErrUnsupported = errors.New("unsupported")

// MaxHeaderSize caps the JSON header length accepted by the reader, checked
// before the header is allocated or mapped.
const MaxHeaderSize = 100 << 20

// FormatError reports a malformed safetensors file.
type FormatError struct {
	Path   string // file name; empty from [ParseHeader]
	Offset int64  // byte offset in the file of the offending data, -1 if unknown
	Msg    string // what is wrong
	Err    error  // underlying cause, may be nil
}

// Error formats the error as "safetensors: path: offset N: msg: cause".
func (e *FormatError) Error() string {
	s := "safetensors: "
	if e.Path != "" {
		s += e.Path + ": "
	}
	if e.Offset >= 0 {
		s += fmt.Sprintf("offset %d: ", e.Offset)
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *FormatError) Unwrap() error { return e.Err }

// withPath returns err with the path filled in if it is a *FormatError
// without one, or wrapped with the path otherwise.
func withPath(err error, path string) error {
	var fe *FormatError
	if errors.As(err, &fe) && fe.Path == "" {
		c := *fe
		c.Path = path
		return &c
	}
	return fmt.Errorf("safetensors: %s: %w", path, err)
}
