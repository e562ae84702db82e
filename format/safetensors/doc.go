// Package safetensors reads and writes the Hugging Face safetensors format
// (https://huggingface.co/docs/safetensors).
//
// A file is an 8-byte little-endian header length N, then N bytes of JSON
//
//	{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
//
// then the data section. Offsets are relative to the start of the data section.
//
// The reader follows the shape of debug/elf: [Open] memory-maps a file
// read-only and [NewFile] reads from any [io.ReaderAt]. Every length and offset
// read from a file is validated against the file size before it is used, and
// the header length is capped at [MaxHeaderSize] before anything is allocated.
// Malformed input yields a [*FormatError] naming the file and the byte offset.
//
// [Write] streams tensors to a temporary file in the destination directory,
// fsyncs it and renames it into place, so a failed or cancelled write leaves no
// partial file behind. Output is deterministic: same input, same bytes.
//
// [ToFloat32], [FromFloat32BF16] and [FromFloat32F16] convert between the
// floating-point storage types and float32.
package safetensors
