package convert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"qllama/convert/awq"
	"qllama/convert/calib"
	"qllama/convert/gptq"
	"qllama/convert/quant"
	"qllama/format/gguf"
	"qllama/infer"
)

// ErrOptions is wrapped by errors about invalid options.
var ErrOptions = errors.New("invalid conversion options")

// Calibration-based methods: they choose the codes, scales and zeros of
// grouped integer (rtn-format) linear layers from activations of a
// calibration text; embeddings and the output head default to f16, as the
// reference GPTQ and AWQ releases keep them.
const (
	MethodGPTQ = "gptq"
	MethodAWQ  = "awq"
)

// Defaults applied when the options leave a parameter at zero.
const (
	DefaultBits     = 4
	DefaultRTNGroup = 128
	DefaultBnbGroup = 64
)

// Methods lists every accepted method and type name.
func Methods() []string {
	return []string{MethodGPTQ, MethodAWQ, gguf.FormatNF4, gguf.FormatFP4, gguf.FormatInt8, "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q4_k", "q6_k", gguf.FormatRTN, "f16", "bf16", "f32"}
}

// Options configure Convert.
type Options struct {
	// In is the Hugging Face model directory; Out the GGUF file to write.
	In, Out string
	// Method is the default format of every weight: one of Methods().
	Method string
	// Bits is the code width of rtn (2..8); 0 means DefaultBits.
	Bits int
	// Group is the group size of rtn (0: DefaultRTNGroup, -1: one group per
	// row) or the absmax block size of nf4/fp4 (0: DefaultBnbGroup).
	Group int
	// Sym selects symmetric rtn (no zero points).
	Sym bool
	// DoubleQuant quantizes the nf4/fp4 absmax to 8 bits (bitsandbytes'
	// compress_statistics).
	DoubleQuant bool
	// Type is the format of the linear layers (attention and MLP); "" means
	// Method. EmbedType is the format of token_embd ("" means Type), HeadType
	// that of the output projection ("" means EmbedType). When embeddings
	// are tied and HeadType differs from EmbedType, an explicit output.weight
	// is written. Norms are always F32.
	Type, EmbedType, HeadType string
	// Threads is the number of quantizing goroutines; <= 0 means GOMAXPROCS.
	Threads int
	// Progress, when set, receives a progress bar counted in output bytes.
	Progress io.Writer

	// Calib is the calibration text (plain text, or JSONL with a "text"
	// field) of the gptq and awq methods.
	Calib string
	// CalibSamples and CalibLen are the windows drawn from Calib and their
	// length in tokens (0: the references' 128 x 2048 for GPTQ, 128 x 512
	// for AWQ); CalibSeed seeds the window offsets.
	CalibSamples, CalibLen int
	CalibSeed              uint64
	// Importance, when set, is where gptq/awq write the per-column
	// importance (mean of x² over the calibration tokens) of every linear
	// layer as JSON, for mixed-precision choices.
	Importance string
	// ActOrder quantizes GPTQ columns in decreasing Hessian-diagonal order
	// (with static groups, so the stored layout stays plain).
	ActOrder bool
	// AWQReferenceQK runs AWQ as the reference implementation does: q_proj
	// and k_proj neither clipped nor guarded (awq.Options.ReferenceQK).
	AWQReferenceQK bool
	// GPTQ runs GPTQ's model walk; nil means gptq.QuantizeModel on the CPU.
	// Commands built with the cuda tag set it to (*cuda.Device).QuantizeGPTQ
	// for --device cuda (blocks, Hessians and the solve on the GPU).
	GPTQ GPTQFunc
	// AWQ runs AWQ's model walk; nil means awq.QuantizeModel on the CPU.
	// Commands built with the cuda tag set it to (*cuda.Device).QuantizeAWQ
	// for --device cuda (blocks, statistics and searches on the GPU).
	AWQ AWQFunc
}

// AWQFunc searches AWQ scales and clipping for every decoder block of m on
// the calibration set, with awq.QuantizeModel's contract.
type AWQFunc func(ctx context.Context, m *infer.Model, set *calib.Set, opt awq.ModelOptions) (*awq.Result, *awq.Report, error)

// GPTQFunc quantizes every decoder linear of m with GPTQ on the calibration
// set, with gptq.QuantizeModel's contract.
type GPTQFunc func(ctx context.Context, m *infer.Model, set *calib.Set, opt gptq.ModelOptions) (map[string]*quant.Grouped, *gptq.Report, error)

// Scheme is a resolved per-tensor format with its parameters.
type Scheme struct {
	Format      string // a quant traits name (q4_0, f16, ...) or gguf.FormatNF4/FP4/Int8/RTN
	Bits        int    // rtn: 2..8; nf4/fp4: 4; int8: 8
	Group       int    // rtn: group size, 0 per channel; nf4/fp4: block size
	Sym         bool   // rtn
	DoubleQuant bool   // nf4/fp4
}

// String describes the scheme, e.g. "q4_0", "nf4 b64 dq", "rtn int3 g128 asym".
func (s Scheme) String() string {
	switch s.Format {
	case gguf.FormatNF4, gguf.FormatFP4:
		str := fmt.Sprintf("%s b%d", s.Format, s.Group)
		if s.DoubleQuant {
			str += " dq"
		}
		return str
	case gguf.FormatRTN:
		g := "per-channel"
		if s.Group > 0 {
			g = fmt.Sprintf("g%d", s.Group)
		}
		sym := "asym"
		if s.Sym {
			sym = "sym"
		}
		return fmt.Sprintf("rtn int%d %s %s", s.Bits, g, sym)
	}
	return s.Format
}

// Native reports whether the scheme is a ggml tensor type (llama.cpp loads it).
func (s Scheme) Native() bool {
	_, err := quant.Lookup(s.Format)
	return err == nil
}

// traits returns the ggml row format of a native scheme.
func (s Scheme) traits() quant.Traits {
	t, _ := quant.Lookup(s.Format)
	return t
}

// fileTypes maps native formats to general.file_type.
var fileTypes = map[string]gguf.FileType{
	"f32": gguf.FileTypeAllF32, "f16": gguf.FileTypeMostlyF16, "bf16": gguf.FileTypeMostlyBF16,
	"q8_0": gguf.FileTypeMostlyQ8_0, "q4_0": gguf.FileTypeMostlyQ4_0, "q4_1": gguf.FileTypeMostlyQ4_1,
	"q5_0": gguf.FileTypeMostlyQ5_0, "q5_1": gguf.FileTypeMostlyQ5_1, "iq4_nl": gguf.FileTypeMostlyIQ4NL,
	// A file of pure Q4_K linear layers is what llama-quantize calls
	// Q4_K_S (its Q4_K_M mixes in Q6_K); pure Q6_K is MOSTLY_Q6_K.
	"q4_k": gguf.FileTypeMostlyQ4_K_S, "q6_k": gguf.FileTypeMostlyQ6_K,
}

// kquantFallback is the 32-block format llama.cpp's tensor_type_fallback
// (src/llama-quant.cpp) picks when a tensor's rows are not whole 256-weight
// super-blocks of a K-quant.
var kquantFallback = map[string]string{"q4_k": "q5_0", "q6_k": "q8_0"}

// scheme builds the scheme named name with the options' parameters.
func (o *Options) scheme(flag, name string) (Scheme, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	s := Scheme{Format: name}
	switch name {
	case gguf.FormatNF4, gguf.FormatFP4:
		s.Bits, s.Group, s.DoubleQuant = 4, o.Group, o.DoubleQuant
		if s.Group == 0 {
			s.Group = DefaultBnbGroup
		}
		if s.Group < 32 || s.Group > 4096 || s.Group&(s.Group-1) != 0 {
			return s, fmt.Errorf("%s %s: group (absmax block) %d must be a power of two in 32..4096: %w", flag, name, o.Group, ErrOptions)
		}
	case gguf.FormatInt8:
		s.Bits = 8
	case gguf.FormatRTN:
		s.Bits, s.Group, s.Sym = o.Bits, o.Group, o.Sym
		if s.Bits == 0 {
			s.Bits = DefaultBits
		}
		if s.Bits < 2 || s.Bits > 8 {
			return s, fmt.Errorf("%s rtn: bits %d must be 2..8: %w", flag, s.Bits, ErrOptions)
		}
		switch {
		case s.Group == 0:
			s.Group = DefaultRTNGroup
		case s.Group == -1:
			s.Group = 0
		case s.Group < 0:
			return s, fmt.Errorf("%s rtn: group %d must be positive or -1 (per channel): %w", flag, s.Group, ErrOptions)
		}
	default:
		if _, err := quant.Lookup(name); err != nil {
			return s, fmt.Errorf("%s %q: want one of %s: %w", flag, name, strings.Join(Methods(), ", "), ErrOptions)
		}
	}
	return s, nil
}

// policy is the resolved per-class format choice.
type policy struct {
	linear, embed, head Scheme
	calibrate           string // "", MethodGPTQ or MethodAWQ: how the linear layers' codes are chosen
}

// resolve validates the options and returns the policy.
func (o *Options) resolve() (policy, error) {
	var p policy
	if o.In == "" || o.Out == "" {
		return p, fmt.Errorf("input directory and output file are required: %w", ErrOptions)
	}
	if o.Method == "" {
		return p, fmt.Errorf("method is required (one of %s): %w", strings.Join(Methods(), ", "), ErrOptions)
	}
	typ, emb, head := o.Type, o.EmbedType, o.HeadType
	method := strings.ToLower(o.Method)
	if method == MethodGPTQ || method == MethodAWQ {
		if typ != "" && !strings.EqualFold(typ, gguf.FormatRTN) {
			return p, fmt.Errorf("%s stores grouped integer weights: --type must be rtn or empty, not %q: %w", method, typ, ErrOptions)
		}
		if o.Calib == "" {
			return p, fmt.Errorf("%s needs a calibration text (--calib FILE): %w", method, ErrOptions)
		}
		if method == MethodAWQ && o.Sym {
			return p, fmt.Errorf("awq is asymmetric only (drop --sym): %w", ErrOptions)
		}
		p.calibrate, typ = method, gguf.FormatRTN
		if emb == "" {
			emb = "f16"
		}
	} else if o.Calib != "" || o.ActOrder {
		return p, fmt.Errorf("--calib and --act-order apply to gptq and awq only: %w", ErrOptions)
	}
	if o.AWQReferenceQK && p.calibrate != MethodAWQ {
		return p, fmt.Errorf("--awq-reference-qk applies to awq only: %w", ErrOptions)
	}
	if typ == "" {
		typ = o.Method
	}
	if emb == "" {
		emb = typ
	}
	if head == "" {
		head = emb
	}
	if p.calibrate == "" {
		if _, err := o.scheme("method", o.Method); err != nil {
			return p, err
		}
	}
	var err error
	if p.linear, err = o.scheme("type", typ); err != nil {
		return p, err
	}
	if p.embed, err = o.scheme("embed-type", emb); err != nil {
		return p, err
	}
	if p.head, err = o.scheme("head-type", head); err != nil {
		return p, err
	}
	uses := func(f ...string) bool {
		for _, s := range []Scheme{p.linear, p.embed, p.head} {
			for _, x := range f {
				if s.Format == x {
					return true
				}
			}
		}
		return false
	}
	switch {
	case o.Bits != 0 && !uses(gguf.FormatRTN):
		return p, fmt.Errorf("bits %d applies to rtn only: %w", o.Bits, ErrOptions)
	case o.Group != 0 && !uses(gguf.FormatRTN, gguf.FormatNF4, gguf.FormatFP4):
		return p, fmt.Errorf("group %d applies to rtn, nf4 and fp4 only: %w", o.Group, ErrOptions)
	case o.Sym && !uses(gguf.FormatRTN):
		return p, fmt.Errorf("sym applies to rtn only: %w", ErrOptions)
	case o.DoubleQuant && !uses(gguf.FormatNF4, gguf.FormatFP4):
		return p, fmt.Errorf("double quant applies to nf4 and fp4 only: %w", ErrOptions)
	}
	return p, nil
}

// fitScheme returns the scheme actually used for a [rows, cols] weight and,
// when it differs from s, why. ggml block formats need cols to be whole
// blocks; as in llama.cpp's tensor_type_fallback, q4_k falls back to q5_0
// and q6_k to q8_0, and what still does not fit (cols not a multiple of 32)
// to f16; nf4/fp4 need cols to be whole absmax blocks (so
// blocks never span rows) and fall back to int8; rtn takes a short last
// group; int8 and the float formats fit any shape.
func fitScheme(s Scheme, cols int) (Scheme, string) {
	switch {
	case s.Native():
		if bs := s.traits().BlockSize; cols%bs != 0 {
			why := fmt.Sprintf("%d columns are not whole %s blocks of %d", cols, s.Format, bs)
			if fb, ok := kquantFallback[s.Format]; ok {
				if t, _ := quant.Lookup(fb); cols%t.BlockSize == 0 {
					return Scheme{Format: fb}, why
				}
			}
			return Scheme{Format: "f16"}, why
		}
	case s.Format == gguf.FormatNF4 || s.Format == gguf.FormatFP4:
		if cols%s.Group != 0 {
			return Scheme{Format: gguf.FormatInt8, Bits: 8}, fmt.Sprintf("%d columns are not whole %s blocks of %d", cols, s.Format, s.Group)
		}
	}
	return s, ""
}
