package gguf

import (
	"fmt"
	"math"
	"strings"
)

// Type is a ggml tensor type id (enum ggml_type), as stored in a tensor info.
type Type uint32

// Tensor type ids, exactly as enum ggml_type in ggml-org/ggml include/ggml.h
// (commit d99724f2b, 2026-08-21; docs/gguf.md lists the same ids up to MXFP4).
// Ids 4, 5, 31–33 and 36–38 were removed from ggml and are not defined here.
const (
	TypeF32     Type = 0
	TypeF16     Type = 1
	TypeQ4_0    Type = 2
	TypeQ4_1    Type = 3
	TypeQ5_0    Type = 6
	TypeQ5_1    Type = 7
	TypeQ8_0    Type = 8
	TypeQ8_1    Type = 9
	TypeQ2_K    Type = 10
	TypeQ3_K    Type = 11
	TypeQ4_K    Type = 12
	TypeQ5_K    Type = 13
	TypeQ6_K    Type = 14
	TypeQ8_K    Type = 15
	TypeIQ2_XXS Type = 16
	TypeIQ2_XS  Type = 17
	TypeIQ3_XXS Type = 18
	TypeIQ1_S   Type = 19
	TypeIQ4_NL  Type = 20
	TypeIQ3_S   Type = 21
	TypeIQ2_S   Type = 22
	TypeIQ4_XS  Type = 23
	TypeI8      Type = 24
	TypeI16     Type = 25
	TypeI32     Type = 26
	TypeI64     Type = 27
	TypeF64     Type = 28
	TypeIQ1_M   Type = 29
	TypeBF16    Type = 30
	TypeTQ1_0   Type = 34
	TypeTQ2_0   Type = 35
	TypeMXFP4   Type = 39
	TypeNVFP4   Type = 40
	TypeQ1_0    Type = 41
	TypeQ2_0    Type = 42
)

// typeTraits is one row of the type table.
type typeTraits struct {
	name      string // ggml's GGML_TYPE_ suffix
	blockSize int    // elements per block
	typeSize  int    // bytes per block
}

// qkK is QK_K, the super-block size of the k-quants and i-quants.
const qkK = 256

// typeTable is the single source of every fact about a tensor type: the
// index is the ggml type id. The sizes follow ggml-org/ggml src/ggml.c
// type_traits[] and the block structs (with their static_asserts) in
// src/ggml-common.h; each type size is spelled as the sum of the block's
// fields. Entries with a zero blockSize are ids that ggml removed.
var typeTable = [...]typeTraits{
	TypeF32:     {"F32", 1, 4},
	TypeF16:     {"F16", 1, 2},
	TypeQ4_0:    {"Q4_0", 32, 2 + 32/2},                      // d f16, 32 × 4-bit
	TypeQ4_1:    {"Q4_1", 32, 2 + 2 + 32/2},                  // d, m f16, 32 × 4-bit
	TypeQ5_0:    {"Q5_0", 32, 2 + 4 + 32/2},                  // d f16, qh u32, 32 × 4-bit
	TypeQ5_1:    {"Q5_1", 32, 2 + 2 + 4 + 32/2},              // d, m f16, qh u32, 32 × 4-bit
	TypeQ8_0:    {"Q8_0", 32, 2 + 32},                        // d f16, 32 × int8
	TypeQ8_1:    {"Q8_1", 32, 2 + 2 + 32},                    // d, s f16, 32 × int8
	TypeQ2_K:    {"Q2_K", qkK, 2*2 + qkK/16 + qkK/4},         // 84
	TypeQ3_K:    {"Q3_K", qkK, 2 + qkK/4 + qkK/8 + 12},       // 110
	TypeQ4_K:    {"Q4_K", qkK, 2*2 + 12 + qkK/2},             // 144
	TypeQ5_K:    {"Q5_K", qkK, 2*2 + 12 + qkK/2 + qkK/8},     // 176
	TypeQ6_K:    {"Q6_K", qkK, 2 + qkK/16 + 3*qkK/4},         // 210
	TypeQ8_K:    {"Q8_K", qkK, 4 + qkK + qkK/16*2},           // 292
	TypeIQ2_XXS: {"IQ2_XXS", qkK, 2 + qkK/8*2},               // 66
	TypeIQ2_XS:  {"IQ2_XS", qkK, 2 + qkK/8*2 + qkK/32},       // 74
	TypeIQ3_XXS: {"IQ3_XXS", qkK, 2 + 3*(qkK/8)},             // 98
	TypeIQ1_S:   {"IQ1_S", qkK, 2 + qkK/8 + qkK/16},          // 50
	TypeIQ4_NL:  {"IQ4_NL", 32, 2 + 32/2},                    // 18
	TypeIQ3_S:   {"IQ3_S", qkK, 2 + 13*(qkK/32) + qkK/64},    // 110
	TypeIQ2_S:   {"IQ2_S", qkK, 2 + qkK/4 + qkK/16},          // 82
	TypeIQ4_XS:  {"IQ4_XS", qkK, 2 + 2 + qkK/64 + qkK/2},     // 136
	TypeI8:      {"I8", 1, 1},                                //
	TypeI16:     {"I16", 1, 2},                               //
	TypeI32:     {"I32", 1, 4},                               //
	TypeI64:     {"I64", 1, 8},                               //
	TypeF64:     {"F64", 1, 8},                               //
	TypeIQ1_M:   {"IQ1_M", qkK, qkK/8 + qkK/16 + qkK/32},     // 56
	TypeBF16:    {"BF16", 1, 2},                              //
	TypeTQ1_0:   {"TQ1_0", qkK, 2 + qkK/64 + (qkK-qkK/16)/5}, // 54
	TypeTQ2_0:   {"TQ2_0", qkK, 2 + qkK/4},                   // 66
	TypeMXFP4:   {"MXFP4", 32, 1 + 32/2},                     // e8m0 scale, 32 × fp4
	TypeNVFP4:   {"NVFP4", 64, 64/16 + 64/2},                 // 4 × e4m3 scale, 64 × fp4
	TypeQ1_0:    {"Q1_0", 128, 2 + 128/8},                    // 18
	TypeQ2_0:    {"Q2_0", 64, 2 + 64/4},                      // 18
}

// traits returns the table row of t and whether t is a known, usable type.
func (t Type) traits() (typeTraits, bool) {
	if uint64(t) >= uint64(len(typeTable)) || typeTable[t].blockSize == 0 {
		return typeTraits{}, false
	}
	return typeTable[t], true
}

// Known reports whether t is a ggml type id this package knows the layout of.
func (t Type) Known() bool {
	_, ok := t.traits()
	return ok
}

// String returns ggml's name for the type ("F32", "Q8_0", "Q4_K"), or
// "Type(N)" for an unknown id.
func (t Type) String() string {
	if tr, ok := t.traits(); ok {
		return tr.name
	}
	return fmt.Sprintf("Type(%d)", uint32(t))
}

// BlockSize returns the number of elements in one block (1 for plain types),
// or 0 for an unknown type.
func (t Type) BlockSize() int {
	tr, _ := t.traits()
	return tr.blockSize
}

// TypeSize returns the number of bytes in one block, or 0 for an unknown type.
func (t Type) TypeSize() int {
	tr, _ := t.traits()
	return tr.typeSize
}

// RowBytes returns the bytes needed by n consecutive elements of type t. n
// must be a non-negative multiple of the block size.
func (t Type) RowBytes(n int64) (int64, error) {
	tr, ok := t.traits()
	if !ok {
		return 0, fmt.Errorf("gguf: tensor type %v: %w", t, ErrUnsupported)
	}
	if n < 0 || n%int64(tr.blockSize) != 0 {
		return 0, fmt.Errorf("gguf: %d elements of type %v: not a multiple of the block size %d", n, t, tr.blockSize)
	}
	blocks := n / int64(tr.blockSize)
	if blocks > math.MaxInt64/int64(tr.typeSize) {
		return 0, fmt.Errorf("gguf: %d elements of type %v: byte size overflows int64", n, t)
	}
	return blocks * int64(tr.typeSize), nil
}

// Types returns every known type in id order.
func Types() []Type {
	var ts []Type
	for i := range typeTable {
		if t := Type(i); t.Known() {
			ts = append(ts, t)
		}
	}
	return ts
}

// ParseType returns the type named name, compared case-insensitively
// ("q8_0", "Q8_0", "bf16").
func ParseType(name string) (Type, error) {
	for _, t := range Types() {
		if strings.EqualFold(t.String(), name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("gguf: unknown tensor type %q", name)
}
