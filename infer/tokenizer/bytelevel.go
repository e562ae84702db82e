package tokenizer

import (
	"unicode/utf8"
)

// byteToRune is GPT-2's bytes_to_unicode table used by the ByteLevel
// pre-tokenizer and decoder: printable Latin-1 bytes map to themselves, the
// other 68 bytes to U+0100 upwards in byte order. It is computed once and
// never written afterwards.
var byteToRune, runeToByte = byteLevelTables()

func byteLevelTables() (b2r [256]rune, r2b map[rune]byte) {
	printable := func(b int) bool {
		return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
	}
	r2b = make(map[rune]byte, 256)
	n := 0
	for b := 0; b < 256; b++ {
		if printable(b) {
			b2r[b] = rune(b)
		} else {
			b2r[b] = rune(256 + n)
			n++
		}
		r2b[b2r[b]] = byte(b)
	}
	return b2r, r2b
}

// byteLevelEncode maps raw bytes to their ByteLevel alphabet string.
func byteLevelEncode(raw string) string {
	return string(appendByteLevel(make([]byte, 0, 2*len(raw)), raw))
}

// appendByteLevel appends the ByteLevel alphabet form of raw to dst.
func appendByteLevel(dst []byte, raw string) []byte {
	for i := 0; i < len(raw); i++ {
		dst = utf8.AppendRune(dst, byteToRune[raw[i]])
	}
	return dst
}

// byteLevelDecode maps a ByteLevel alphabet string back to raw bytes. ok is
// false if some character is outside the alphabet (HF then keeps the token's
// own UTF-8 bytes, which is what the caller should do).
func byteLevelDecode(tok string) (raw []byte, ok bool) {
	raw = make([]byte, 0, len(tok))
	for _, r := range tok {
		b, found := runeToByte[r]
		if !found {
			return nil, false
		}
		raw = append(raw, b)
	}
	return raw, true
}

// lossyUTF8 returns s with every maximal invalid UTF-8 subpart replaced by
// U+FFFD, exactly like Rust's String::from_utf8_lossy (which Hugging Face
// decoders use). Go's strings.ToValidUTF8 differs: it replaces whole runs.
func lossyUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	out := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r != utf8.RuneError || n > 1 {
			out = append(out, s[i:i+n]...)
			i += n
			continue
		}
		out = append(out, "\uFFFD"...)
		i += invalidSubpartLen(s[i:])
	}
	return string(out)
}

// invalidSubpartLen is the length of the maximal prefix of s that could start
// a valid UTF-8 sequence but does not complete one (at least 1), per the
// Unicode "maximal subpart" rule.
func invalidSubpartLen(s string) int {
	c := s[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(s); k++ {
		b := s[n]
		if k == 0 {
			if b < lo || b > hi {
				break
			}
		} else if b < 0x80 || b > 0xBF {
			break
		}
		n++
	}
	return n
}
