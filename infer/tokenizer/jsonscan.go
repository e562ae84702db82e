package tokenizer

import (
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner is a minimal JSON reader used for the two big members of
// tokenizer.json (model.vocab with ~128k entries and model.merges with ~280k):
// encoding/json needs ~300 ms for the 9 MB Llama 3 file, this needs a fraction
// of that. Everything else is handed to encoding/json as raw bytes, which
// also validates it.
type scanner struct {
	b   []byte
	pos int
}

// syntaxError reports malformed JSON at the current offset.
func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", s.pos, fmt.Sprintf(format, args...))
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end of input.
func (s *scanner) peek() byte {
	s.skipSpace()
	if s.pos >= len(s.b) {
		return 0
	}
	return s.b[s.pos]
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		if s.pos >= len(s.b) {
			return s.errorf("unexpected end of input, want %q", c)
		}
		return s.errorf("want %q, got %q", c, s.b[s.pos])
	}
	s.pos++
	return nil
}

// str reads a JSON string. Strings without escapes share no memory with the
// input but cost a single allocation.
func (s *scanner) str() (string, error) {
	if err := s.expect('"'); err != nil {
		return "", err
	}
	start := s.pos
	for i := start; i < len(s.b); i++ {
		c := s.b[i]
		if c == '"' {
			s.pos = i + 1
			return string(s.b[start:i]), nil
		}
		if c == '\\' {
			return s.strEscaped(start)
		}
		if c < 0x20 {
			s.pos = i
			return "", s.errorf("control character in string")
		}
	}
	s.pos = len(s.b)
	return "", s.errorf("unterminated string")
}

// strBytes reads a JSON string; without escapes the result aliases the input.
func (s *scanner) strBytes() ([]byte, error) {
	if err := s.expect('"'); err != nil {
		return nil, err
	}
	start := s.pos
	for i := start; i < len(s.b); i++ {
		c := s.b[i]
		if c == '"' {
			s.pos = i + 1
			return s.b[start:i], nil
		}
		if c == '\\' {
			str, err := s.strEscaped(start)
			return []byte(str), err
		}
		if c < 0x20 {
			s.pos = i
			return nil, s.errorf("control character in string")
		}
	}
	s.pos = len(s.b)
	return nil, s.errorf("unterminated string")
}

func (s *scanner) strEscaped(start int) (string, error) {
	out := make([]byte, 0, 16)
	i := start
	for i < len(s.b) {
		c := s.b[i]
		switch {
		case c == '"':
			s.pos = i + 1
			return string(out), nil
		case c < 0x20:
			s.pos = i
			return "", s.errorf("control character in string")
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(s.b) {
			break
		}
		e := s.b[i+1]
		i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(s.b, i)
			if !ok {
				s.pos = i
				return "", s.errorf("bad \\u escape")
			}
			i += 4
			if utf16.IsSurrogate(r) {
				// A valid pair decodes to one rune; anything else becomes U+FFFD as in encoding/json.
				r2, ok2 := rune(-1), false
				if i+6 <= len(s.b) && s.b[i] == '\\' && s.b[i+1] == 'u' {
					r2, ok2 = hex4(s.b, i+2)
				}
				if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			s.pos = i - 1
			return "", s.errorf("bad escape \\%c", e)
		}
	}
	s.pos = len(s.b)
	return "", s.errorf("unterminated string")
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[i:i+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	return rune(v), true
}

// integer reads a non-negative JSON integer that fits an int32.
func (s *scanner) integer() (int, error) {
	s.skipSpace()
	start := s.pos
	v := 0
	for s.pos < len(s.b) && s.b[s.pos] >= '0' && s.b[s.pos] <= '9' {
		v = v*10 + int(s.b[s.pos]-'0')
		if v > 1<<31-1 {
			return 0, s.errorf("integer too large")
		}
		s.pos++
	}
	if s.pos == start {
		return 0, s.errorf("want a non-negative integer")
	}
	if s.pos < len(s.b) {
		switch s.b[s.pos] {
		case '.', 'e', 'E':
			return 0, s.errorf("want an integer, got a fraction")
		}
	}
	return v, nil
}

// skip passes over one JSON value and returns its raw bytes. Strings are
// scanned exactly; everything else is validated later by encoding/json.
func (s *scanner) skip() ([]byte, error) {
	s.skipSpace()
	start := s.pos
	depth := 0
	for s.pos < len(s.b) {
		c := s.b[s.pos]
		switch c {
		case '"':
			if _, err := s.rawString(); err != nil {
				return nil, err
			}
			if depth == 0 {
				return s.b[start:s.pos], nil
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth < 0 {
				return nil, s.errorf("unexpected %q", c)
			}
			if depth == 0 {
				s.pos++
				return s.b[start:s.pos], nil
			}
		case ',', ':':
			if depth == 0 {
				return s.b[start:s.pos], nil
			}
		case ' ', '\t', '\n', '\r':
			if depth == 0 {
				return s.b[start:s.pos], nil
			}
		}
		s.pos++
	}
	if depth != 0 || s.pos == start {
		return nil, s.errorf("unexpected end of input")
	}
	return s.b[start:s.pos], nil
}

// rawString skips a string without decoding it.
func (s *scanner) rawString() ([]byte, error) {
	start := s.pos
	s.pos++
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case '"':
			s.pos++
			return s.b[start:s.pos], nil
		case '\\':
			s.pos += 2
			continue
		}
		s.pos++
	}
	return nil, s.errorf("unterminated string")
}

// object calls fn for every member of a JSON object; fn must consume the value.
func (s *scanner) object(fn func(key string) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.pos++
		return nil
	}
	for {
		key, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := fn(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.errorf("want ',' or '}' in object")
		}
	}
}

// array calls fn for every element of a JSON array; fn must consume the value.
func (s *scanner) array(fn func(i int) error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.pos++
		return nil
	}
	for i := 0; ; i++ {
		if err := fn(i); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.errorf("want ',' or ']' in array")
		}
	}
}
