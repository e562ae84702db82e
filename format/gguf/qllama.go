package gguf

// The qllama.* namespace: keys and per-tensor component schemes for what
// ggml has no type or key for (docs/FORMAT.md section 5). The converter
// writes them and the runtime reads them; they are part of the file format,
// so they live here.

// qllama.* keys besides the per-tensor ones
// (docs/FORMAT.md section 5).
const (
	KeyQllamaVersion     = "qllama.version"
	KeyQllamaMethod      = "qllama.quant.method"
	KeyQllamaScheme      = "qllama.quant.scheme"
	KeyQllamaBits        = "qllama.quant.bits"
	KeyQllamaGroupSize   = "qllama.quant.group_size"
	KeyQllamaFallbacks   = "qllama.quant.fallbacks"
	KeyQllamaSourceName  = "qllama.source.name"
	KeyQllamaSourceFiles = "qllama.source.files"
	KeyQllamaSourceHash  = "qllama.source.sha256"
	KeyQllamaSourceDType = "qllama.source.dtype"

	KeyQllamaRopeTheta        = "qllama.rope.freq_base"
	KeyQllamaRopeScalingType  = "qllama.rope.scaling.type"
	KeyQllamaRopeFactor       = "qllama.rope.scaling.factor"
	KeyQllamaRopeLowFreq      = "qllama.rope.scaling.low_freq_factor"
	KeyQllamaRopeHighFreq     = "qllama.rope.scaling.high_freq_factor"
	KeyQllamaRopeOrigCtx      = "qllama.rope.scaling.original_context_length"
	KeyQllamaConfigBOS        = "qllama.config.bos_token_id"
	KeyQllamaConfigEOS        = "qllama.config.eos_token_ids"
	KeyQllamaTokenizerCount   = "qllama.tokenizer.token_count"
	KeyQllamaTokenizerPattern = "qllama.tokenizer.pattern"
	KeyQllamaTokenizerIgnore  = "qllama.tokenizer.ignore_merges"
	KeyQllamaTokenizerEOSList = "qllama.tokenizer.eos_token_ids"
)

// FormatVersion is the qllama.version written (docs/FORMAT.md).
const FormatVersion = 1

// TensorKey returns the per-tensor key qllama.quant.<tensor>.<field>.
func TensorKey(tensor, field string) string { return "qllama.quant." + tensor + "." + field }

// Format names beyond the ggml row formats of the quant traits table.
const (
	FormatNF4  = "nf4"  // bitsandbytes NF4, absmax per block (Group, default 64)
	FormatFP4  = "fp4"  // bitsandbytes FP4
	FormatInt8 = "int8" // LLM.int8: per-row absmax, signed 8-bit codes
	FormatRTN  = "rtn"  // grouped integer round to nearest, Bits 2..8 (GPTQ rule)
)

// StoredInt is the qllama.quant.<T>.format of grouped integer weights
// (written by rtn; GPTQ/AWQ-style weights use the same layout).
const StoredInt = "int"
