package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// metadataKey is the reserved header key holding free-form string metadata.
const metadataKey = "__metadata__"

// headerEntry is one tensor's JSON record.
type headerEntry struct {
	DType   *string            `json:"dtype"`
	Shape   *[]json.RawMessage `json:"shape"`
	Offsets *[]json.RawMessage `json:"data_offsets"`
}

// ParseHeader parses and validates the JSON header b of a file whose data
// section is dataSize bytes long. It returns the tensors by name and the
// __metadata__ map (empty, never nil, when absent).
//
// It checks that the header is one JSON object with no duplicate names, that
// every dtype is known, every dimension a non-negative integer, the element
// count does not overflow, data_offsets has exactly the size the dtype and
// shape imply and lies inside the data section, and that no two tensors
// overlap. Gaps between tensors are tolerated. Errors are [*FormatError]s
// whose Offset is a file offset (the header starts at byte 8).
func ParseHeader(b []byte, dataSize int64) (map[string]TensorInfo, map[string]string, error) {
	if dataSize < 0 {
		return nil, nil, &FormatError{Offset: -1, Msg: fmt.Sprintf("negative data section size %d", dataSize)}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	at := func() int64 { return 8 + dec.InputOffset() }
	bad := func(off int64, err error, format string, args ...any) error {
		return &FormatError{Offset: off, Msg: "header: " + fmt.Sprintf(format, args...), Err: err}
	}

	tok, err := dec.Token()
	if err != nil {
		return nil, nil, bad(at(), err, "invalid JSON")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, bad(8, nil, "not a JSON object")
	}

	tensors := make(map[string]TensorInfo)
	pos := make(map[string]int64)
	metadata := make(map[string]string)
	seenMeta := false
	for dec.More() {
		keyAt := at()
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, bad(keyAt, err, "invalid JSON")
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, bad(keyAt, nil, "object key is not a string")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, bad(at(), err, "invalid JSON in entry %q", name)
		}
		if name == metadataKey {
			if seenMeta {
				return nil, nil, bad(keyAt, nil, "duplicate %s", metadataKey)
			}
			seenMeta = true
			var m map[string]string
			if err := json.Unmarshal(raw, &m); err != nil {
				return nil, nil, bad(keyAt, err, "%s must map strings to strings", metadataKey)
			}
			for k, v := range m {
				metadata[k] = v
			}
			continue
		}
		if _, dup := tensors[name]; dup {
			return nil, nil, bad(keyAt, nil, "duplicate tensor name %q", name)
		}
		ti, err := parseEntry(name, raw, dataSize)
		if err != nil {
			return nil, nil, bad(keyAt, err, "tensor %q", name)
		}
		tensors[name] = ti
		pos[name] = keyAt
	}
	if _, err := dec.Token(); err != nil { // closing '}'
		return nil, nil, bad(at(), err, "invalid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, bad(at(), err, "trailing data after the JSON object")
	}

	if err := checkOverlap(tensors, pos); err != nil {
		return nil, nil, err
	}
	return tensors, metadata, nil
}

// parseEntry validates one tensor record.
func parseEntry(name string, raw json.RawMessage, dataSize int64) (TensorInfo, error) {
	var e headerEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		return TensorInfo{}, fmt.Errorf("malformed entry: %w", err)
	}
	switch {
	case e.DType == nil:
		return TensorInfo{}, errors.New("missing dtype")
	case e.Shape == nil:
		return TensorInfo{}, errors.New("missing shape")
	case e.Offsets == nil:
		return TensorInfo{}, errors.New("missing data_offsets")
	}
	dt := DType(*e.DType)
	size, err := dt.Size()
	if err != nil {
		return TensorInfo{}, fmt.Errorf("unknown %w", err)
	}
	shape := make([]int64, len(*e.Shape))
	for i, n := range *e.Shape {
		d, err := strconv.ParseInt(string(n), 10, 64) // rejects strings, fractions, exponents
		if err != nil || d < 0 {
			return TensorInfo{}, fmt.Errorf("shape[%d] = %s is not a non-negative integer", i, string(n))
		}
		shape[i] = d
	}
	numel, ok := numElements(shape)
	if !ok {
		return TensorInfo{}, fmt.Errorf("shape %v: element count overflows int64", shape)
	}
	want, ok := byteSize(numel, size)
	if !ok {
		return TensorInfo{}, fmt.Errorf("shape %v of %s: byte size overflows int64", shape, dt)
	}
	if len(*e.Offsets) != 2 {
		return TensorInfo{}, fmt.Errorf("data_offsets has %d values, want 2", len(*e.Offsets))
	}
	var off [2]int64
	for i, n := range *e.Offsets {
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || v < 0 {
			return TensorInfo{}, fmt.Errorf("data_offsets[%d] = %s is not a non-negative integer", i, string(n))
		}
		off[i] = v
	}
	begin, end := off[0], off[1]
	if end < begin {
		return TensorInfo{}, fmt.Errorf("data_offsets [%d, %d]: end before begin", begin, end)
	}
	if end > dataSize {
		return TensorInfo{}, fmt.Errorf("data_offsets [%d, %d] out of bounds of the %d-byte data section (truncated file?)", begin, end, dataSize)
	}
	if end-begin != want {
		return TensorInfo{}, fmt.Errorf("data_offsets [%d, %d] hold %d bytes, but shape %v of %s needs %d",
			begin, end, end-begin, shape, dt, want)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Begin: begin, End: end}, nil
}

// checkOverlap reports the first pair of tensors whose byte ranges intersect.
// Zero-sized tensors occupy no bytes and never overlap.
func checkOverlap(tensors map[string]TensorInfo, pos map[string]int64) error {
	list := make([]TensorInfo, 0, len(tensors))
	for _, t := range tensors {
		if t.End > t.Begin {
			list = append(list, t)
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].Begin != list[j].Begin {
			return list[i].Begin < list[j].Begin
		}
		return list[i].Name < list[j].Name
	})
	var prev TensorInfo
	for i, t := range list {
		if i > 0 && t.Begin < prev.End {
			return &FormatError{Offset: pos[t.Name], Msg: fmt.Sprintf(
				"header: tensor %q [%d, %d] overlaps tensor %q [%d, %d]",
				t.Name, t.Begin, t.End, prev.Name, prev.Begin, prev.End)}
		}
		if i == 0 || t.End > prev.End {
			prev = t
		}
	}
	return nil
}
