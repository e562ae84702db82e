// Package convert turns a Hugging Face Llama directory into one
// self-contained GGUF file (docs/FORMAT.md): weights quantized tensor by
// tensor with a per-tensor policy, the Q/K rows permuted as llama.cpp's
// converter does, Llama 3 RoPE factors as rope_freqs.weight, every llama.*
// key, the tokenizer embedded, and qllama.* keys for what llama.cpp lacks.
//
// Formats that coincide with a ggml type (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
// Q5_0, Q5_1, IQ4_NL, Q4_K, Q6_K) are written as that type, so such files load in
// llama.cpp. The others (NF4/FP4, LLM.int8, grouped RTN INT2-8) are written
// as component tensors of plain ggml types described by qllama.quant.* keys.
//
// Conversion streams: each tensor is read from the memory-mapped safetensors,
// quantized in row chunks on several goroutines and written before the next
// one is touched, so memory stays near one tensor's packed size.
package convert
