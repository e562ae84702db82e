// Package gguf reads and writes GGUF version 3 files, the container format of
// ggml and llama.cpp.
//
// The format is specified in ggml-org/ggml docs/gguf.md ("File Structure"):
//
//	magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//	kv_count × (key string | value_type u32 | value)
//	tensor_count × (name string | n_dims u32 | ne[n_dims] u64 | ggml_type u32 | offset u64)
//	zero padding to general.alignment
//	tensor data, each tensor at data_start+offset, offset a multiple of general.alignment
//
// Everything is little-endian; a string is a u64 byte length followed by the
// bytes; an array is an element type u32, a u64 element count and the elements.
//
// # Shapes
//
// GGUF stores dimensions in ggml order: ne[0] is the innermost, contiguous
// dimension, which is PyTorch's last dimension. This package's API uses
// PyTorch (row-major) order everywhere: a weight of nn.Linear(in, out) has
// Shape []int64{out, in}, so one row of out holds in contiguous elements. The
// conversion happens in exactly one function, ggmlDims in shape.go, called by
// the writer when it encodes a tensor info and by the reader when it decodes
// one.
//
// # Writing
//
// Write (to a path, atomically) and Encode (to any io.Writer) produce the same
// deterministic bytes for the same input: the metadata keys are written with
// general.architecture first and the rest sorted by key, tensors in the order
// given, every offset computed from the sizes before anything is written, and
// each tensor's bytes produced by its WriteData callback, which must write
// exactly TensorSpec.Size() bytes.
//
// # Reading
//
// Open memory-maps a file; NewFile parses any io.ReaderAt. Both check every
// count and length against the bytes that remain in the file before they
// allocate anything, and report problems as *FormatError with the file and
// byte offset. Files of version 2 and 3 are accepted; unknown versions and
// unknown tensor types wrap ErrUnsupported.
package gguf
