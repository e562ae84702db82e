// Package quant holds qllama's calibration-free weight formats: the codecs that
// turn float32 weights into packed bytes and back, with no calibration data.
//
// Two families live here.
//
// Row formats that coincide with ggml types (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
// Q5_0, Q5_1, IQ4_NL, and the K-quants Q4_K and Q6_K on 256-weight
// super-blocks) are described by one [Traits] row each in a single table
// (see [All], [Lookup], [ByGGUFType]). Every row carries the block layout, a
// reference Quantize identical bit for bit to ggml's quantize_row_*_ref, a
// Dequantize identical to ggml's dequantize_row_*, a Validate in the spirit of
// ggml_validate_row_data, and a fast Dot used by the CPU runtime's matvec.
//
// Whole-tensor formats ggml lacks are codecs on a 2-D [rows, cols] tensor and
// are later stored as component tensors: [Int8] (LLM.int8 per-row absmax),
// [Bnb4] (bitsandbytes NF4 and FP4 with optional double quantization of the
// absmax) and [Grouped] (GPTQ/AWQ-style grouped integer weights, 2..8 bits).
// They share the [Tensor] interface.
//
// The README.md next to this file documents every layout, its rounding, and
// which upstream entry point each codec mirrors.
package quant
