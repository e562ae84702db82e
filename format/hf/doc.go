// Package hf opens Hugging Face Llama checkpoints: config.json, one
// model.safetensors or a sharded model.safetensors.index.json, and the
// tokenizer and generation configs beside them.
//
// [ParseConfig] reads config.json with the defaults of transformers'
// LlamaConfig and rejects what this toolchain does not implement (other
// architectures, rope scaling other than default/linear/llama3, biases) with
// errors wrapping [ErrUnsupported]. [Open] memory-maps every shard through
// package safetensors and checks that each tensor a Llama model needs is
// present with the shape the config implies. Tensor names are spelled once,
// here ([EmbedName], [LayerTensorName], ...), for the other packages to use.
package hf
