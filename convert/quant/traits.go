package quant

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Sentinel errors; every error returned by this package wraps one of them.
var (
	// ErrNonFinite reports a NaN or infinite input value or stored scale.
	ErrNonFinite = errors.New("non-finite value")
	// ErrOverflow reports a value or scale that does not fit the storage type
	// (for example a block scale above the float16 range).
	ErrOverflow = errors.New("value out of range for the storage type")
	// ErrSize reports a length that is not whole blocks or does not match.
	ErrSize = errors.New("size mismatch")
	// ErrParam reports an invalid parameter (bits, group size, block size...).
	ErrParam = errors.New("invalid parameter")
	// ErrUnknownType reports a format name or GGUF id with no table row.
	ErrUnknownType = errors.New("unknown quantization type")
)

// GGUFType is a ggml/GGUF tensor type id (enum ggml_type in ggml.h).
type GGUFType uint32

// GGUF type ids of the formats in the traits table.
const (
	GGUFF32    GGUFType = 0
	GGUFF16    GGUFType = 1
	GGUFQ4_0   GGUFType = 2
	GGUFQ4_1   GGUFType = 3
	GGUFQ5_0   GGUFType = 6
	GGUFQ5_1   GGUFType = 7
	GGUFQ8_0   GGUFType = 8
	GGUFQ4_K   GGUFType = 12
	GGUFQ6_K   GGUFType = 14
	GGUFIQ4_NL GGUFType = 20
	GGUFBF16   GGUFType = 30
)

// Traits describes one row format: a row of n float32 values is stored as
// n/BlockSize consecutive blocks of BlockBytes bytes each.
type Traits struct {
	// Name is the ggml type name (ggml_type_name), e.g. "q4_0", lower-cased
	// ("q4_k", "q6_k" for ggml's q4_K, q6_K; Lookup ignores case).
	Name string
	// GGUF is the ggml type id the format coincides with bit for bit.
	GGUF GGUFType
	// BlockSize is the number of weights per block.
	BlockSize int
	// BlockBytes is the number of bytes per block.
	BlockBytes int
	// BitsPerWeight is 8*BlockBytes/BlockSize, scales included.
	BitsPerWeight float64
	// Quantize encodes one row: len(src) must be a multiple of BlockSize and
	// len(dst) must equal RowBytes(len(src)). NaN/Inf inputs and block scales
	// outside the float16 range are errors; dst is then unspecified.
	Quantize func(dst []byte, src []float32) error
	// Dequantize decodes one row: len(src) must be whole blocks and len(dst)
	// must equal the number of weights they hold. It does not check scales;
	// call Validate on untrusted data first.
	Dequantize func(dst []float32, src []byte) error
	// Validate reports NaN/Inf stored scales or values and partial blocks,
	// like ggml_validate_row_data.
	Validate func(src []byte) error
	// Dot returns the dot product of one packed row with x, accumulated block
	// by block in float32 without allocating. It is the runtime's matvec inner
	// loop and trusts its caller: len(src) must be whole blocks holding exactly
	// len(x) weights, or it panics.
	Dot func(src []byte, x []float32) float32
}

// RowBytes returns the packed size of a row of n weights, or an error if n is
// not a whole number of blocks.
func (t Traits) RowBytes(n int) (int, error) {
	if n < 0 || n%t.BlockSize != 0 {
		return 0, fmt.Errorf("quant: %s: row of %d weights is not a multiple of the block size %d: %w", t.Name, n, t.BlockSize, ErrSize)
	}
	return n / t.BlockSize * t.BlockBytes, nil
}

// table is the single traits table; it is only read. Generic code iterates it
// through All.
var table = [...]Traits{
	traitsF32(),
	traitsF16(),
	traitsBF16(),
	traitsQ8_0(),
	traitsQ4_0(),
	traitsQ4_1(),
	traitsQ5_0(),
	traitsQ5_1(),
	traitsIQ4NL(),
	traitsQ4K(),
	traitsQ6K(),
}

// All returns a copy of the traits table in a fixed order.
func All() []Traits {
	out := make([]Traits, len(table))
	copy(out, table[:])
	return out
}

// Lookup returns the row for a ggml type name such as "q4_0" (case-insensitive).
func Lookup(name string) (Traits, error) {
	for _, t := range table {
		if strings.EqualFold(t.Name, name) {
			return t, nil
		}
	}
	return Traits{}, fmt.Errorf("quant: format %q: %w", name, ErrUnknownType)
}

// ByGGUFType returns the row for a GGUF type id.
func ByGGUFType(id GGUFType) (Traits, error) {
	for _, t := range table {
		if t.GGUF == id {
			return t, nil
		}
	}
	return Traits{}, fmt.Errorf("quant: GGUF type id %d: %w", id, ErrUnknownType)
}

// checkRow validates the lengths for Quantize and the input values.
func checkQuantize(name string, bs, bb int, dst []byte, src []float32) error {
	if len(src)%bs != 0 {
		return fmt.Errorf("quant: %s: row of %d weights is not a multiple of the block size %d: %w", name, len(src), bs, ErrSize)
	}
	if want := len(src) / bs * bb; len(dst) != want {
		return fmt.Errorf("quant: %s: destination has %d bytes, a row of %d weights needs %d: %w", name, len(dst), len(src), want, ErrSize)
	}
	return checkFinite(name, src)
}

// checkFinite rejects NaN and Inf values, naming the first offending index.
func checkFinite(name string, src []float32) error {
	for i, v := range src {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("quant: %s: element %d is %v: %w", name, i, v, ErrNonFinite)
		}
	}
	return nil
}

// checkDequantize validates the lengths for Dequantize.
func checkDequantize(name string, bs, bb int, dst []float32, src []byte) error {
	if len(src)%bb != 0 {
		return fmt.Errorf("quant: %s: %d bytes is not a whole number of %d-byte blocks: %w", name, len(src), bb, ErrSize)
	}
	if want := len(src) / bb * bs; len(dst) != want {
		return fmt.Errorf("quant: %s: destination holds %d weights, %d bytes decode to %d: %w", name, len(dst), len(src), want, ErrSize)
	}
	return nil
}

// checkDot panics when the caller broke Dot's contract.
func checkDot(name string, bs, bb int, src []byte, x []float32) {
	if len(src)%bb != 0 || len(src)/bb*bs != len(x) {
		panic(fmt.Sprintf("quant: %s: Dot of %d bytes with a vector of %d values", name, len(src), len(x)))
	}
}

// validateBlocks checks whole blocks and runs scale checks on each.
func validateBlocks(name string, bb int, src []byte, check func(blk []byte) error) error {
	if len(src)%bb != 0 {
		return fmt.Errorf("quant: %s: %d bytes is not a whole number of %d-byte blocks: %w", name, len(src), bb, ErrSize)
	}
	for i := 0; i < len(src)/bb; i++ {
		if err := check(src[i*bb : (i+1)*bb]); err != nil {
			return fmt.Errorf("quant: %s: block %d: %w", name, i, err)
		}
	}
	return nil
}
