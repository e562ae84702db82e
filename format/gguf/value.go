package gguf

import (
	"fmt"
	"unicode/utf8"
)

// ValueType is a GGUF metadata value type (enum gguf_metadata_value_type in
// docs/gguf.md).
type ValueType uint32

// Metadata value types, numbered as in docs/gguf.md.
const (
	ValueUint8   ValueType = 0
	ValueInt8    ValueType = 1
	ValueUint16  ValueType = 2
	ValueInt16   ValueType = 3
	ValueUint32  ValueType = 4
	ValueInt32   ValueType = 5
	ValueFloat32 ValueType = 6
	ValueBool    ValueType = 7
	ValueString  ValueType = 8
	ValueArray   ValueType = 9
	ValueUint64  ValueType = 10
	ValueInt64   ValueType = 11
	ValueFloat64 ValueType = 12
)

// valueTypeNames is indexed by ValueType.
var valueTypeNames = [...]string{
	"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
	"bool", "string", "array", "uint64", "int64", "float64",
}

// String returns the spec's name of the value type.
func (v ValueType) String() string {
	if uint64(v) < uint64(len(valueTypeNames)) {
		return valueTypeNames[v]
	}
	return fmt.Sprintf("ValueType(%d)", uint32(v))
}

// fixedSize returns the encoded size of a scalar of type v, or 0 for string,
// array and unknown types.
func (v ValueType) fixedSize() int {
	switch v {
	case ValueUint8, ValueInt8, ValueBool:
		return 1
	case ValueUint16, ValueInt16:
		return 2
	case ValueUint32, ValueInt32, ValueFloat32:
		return 4
	case ValueUint64, ValueInt64, ValueFloat64:
		return 8
	}
	return 0
}

// minSize is the fewest bytes one encoded value of type v can occupy; used
// to bound element counts read from a file before allocating.
func (v ValueType) minSize() int {
	switch v {
	case ValueString:
		return 8 // u64 length
	case ValueArray:
		return 4 + 8 // element type, u64 count
	}
	return v.fixedSize()
}

// KV is one metadata key-value pair.
//
// Go types map to GGUF value types one to one, on write and on read:
//
//	uint8 uint8 · int8 int8 · uint16 uint16 · int16 int16 · uint32 uint32
//	int32 int32 · float32 float32 · bool bool · string string · uint64 uint64
//	int64 int64 · float64 float64
//	[]T for any of those T: an array of T ([]string, []int32, []float32, …)
//	[]any whose elements are themselves arrays ([]T or []any): an array of
//	arrays (docs/gguf.md allows nesting; llama.cpp's reader rejects it)
//
// int, uint, uintptr and other Go types are rejected, because their width
// would be a guess. Strings must be valid UTF-8.
type KV struct {
	Key   string
	Value any
}

// ValueTypeOf returns the GGUF value type that v is written as, or an error
// when v's Go type has no GGUF counterpart.
func ValueTypeOf(v any) (ValueType, error) {
	switch v.(type) {
	case uint8:
		return ValueUint8, nil
	case int8:
		return ValueInt8, nil
	case uint16:
		return ValueUint16, nil
	case int16:
		return ValueInt16, nil
	case uint32:
		return ValueUint32, nil
	case int32:
		return ValueInt32, nil
	case float32:
		return ValueFloat32, nil
	case bool:
		return ValueBool, nil
	case string:
		return ValueString, nil
	case uint64:
		return ValueUint64, nil
	case int64:
		return ValueInt64, nil
	case float64:
		return ValueFloat64, nil
	case []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32,
		[]bool, []string, []uint64, []int64, []float64, []any:
		return ValueArray, nil
	}
	return 0, fmt.Errorf("a value of Go type %T has no GGUF value type (use a sized type such as int32 or uint64)", v)
}

// arrayElemType returns the element type and length of an array value.
func arrayElemType(v any) (ValueType, int, error) {
	switch a := v.(type) {
	case []uint8:
		return ValueUint8, len(a), nil
	case []int8:
		return ValueInt8, len(a), nil
	case []uint16:
		return ValueUint16, len(a), nil
	case []int16:
		return ValueInt16, len(a), nil
	case []uint32:
		return ValueUint32, len(a), nil
	case []int32:
		return ValueInt32, len(a), nil
	case []float32:
		return ValueFloat32, len(a), nil
	case []bool:
		return ValueBool, len(a), nil
	case []string:
		return ValueString, len(a), nil
	case []uint64:
		return ValueUint64, len(a), nil
	case []int64:
		return ValueInt64, len(a), nil
	case []float64:
		return ValueFloat64, len(a), nil
	case []any:
		return ValueArray, len(a), nil
	}
	return 0, 0, fmt.Errorf("a value of Go type %T is not a GGUF array", v)
}

// maxNesting bounds how deeply arrays of arrays may nest, on write and on
// read, so a crafted file cannot drive unbounded recursion.
const maxNesting = 16

// checkValue validates that v can be encoded: its Go type maps to a GGUF
// type, strings are UTF-8, and nested arrays hold only arrays.
func checkValue(v any, depth int) error {
	if depth > maxNesting {
		return fmt.Errorf("arrays nested deeper than %d", maxNesting)
	}
	if _, err := ValueTypeOf(v); err != nil {
		return err
	}
	switch a := v.(type) {
	case string:
		if !utf8.ValidString(a) {
			return fmt.Errorf("string %q is not valid UTF-8", a)
		}
	case []string:
		for i, s := range a {
			if !utf8.ValidString(s) {
				return fmt.Errorf("element %d: string %q is not valid UTF-8", i, s)
			}
		}
	case []any:
		for i, e := range a {
			if _, _, err := arrayElemType(e); err != nil {
				return fmt.Errorf("element %d of an array of arrays: %w", i, err)
			}
			if err := checkValue(e, depth+1); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
	}
	return nil
}
