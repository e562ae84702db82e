package gguf

import (
	"errors"
	"fmt"
)

// ErrUnsupported is wrapped by errors about well-formed input that this
// package does not handle: a GGUF version other than 2 or 3, a ggml tensor
// type id missing from the type table, or a type that has no fixed block size.
var ErrUnsupported = errors.New("unsupported")

// FormatError reports malformed or unsupported GGUF input.
type FormatError struct {
	// Path names the file; it is empty when the input came from NewFile
	// without a name.
	Path string
	// Offset is the byte offset in the file where the problem was found, or
	// -1 when the problem is not tied to one place.
	Offset int64
	// Msg says what is wrong.
	Msg string
	// Err is the underlying cause, such as ErrUnsupported or
	// io.ErrUnexpectedEOF; it may be nil.
	Err error
}

// Error formats the error as "gguf: path: offset 0x10: msg: cause".
func (e *FormatError) Error() string {
	s := "gguf: "
	if e.Path != "" {
		s += e.Path + ": "
	}
	if e.Offset >= 0 {
		s += fmt.Sprintf("offset %d (0x%x): ", e.Offset, e.Offset)
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *FormatError) Unwrap() error { return e.Err }
