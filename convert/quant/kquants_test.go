package quant

// The K-quant encoders (quantize_row_q4_K_ref with make_qkx2_quants,
// quantize_row_q6_K_ref with make_qx_quants) are iterative float32 searches
// whose result depends on the exact order of float32 operations, so there is
// no independent float64 re-derivation of them here. Instead:
//
//   - they were compared byte for byte with ggml's C reference (ggml-org/ggml
//     commit d99724f2b141fed9e1a9f402213506c081433465, src/ggml-quants.c
//     built with gcc -O2 -ffp-contract=off -DNDEBUG, as release builds of
//     llama.cpp compile it) on 40,000 seeded rows of 512 weights each
//     (4 seeds x 10,000; 80,000 super-blocks a format: gaussian, small, ties, wide
//     dynamic range, uniform, all-positive, all-negative, 1e-6 (fp16-subnormal
//     d), offset rows, with zero sub-blocks, outliers, 1e-17 sub-blocks,
//     constant groups, zero and 1e-17 super-blocks): every block identical,
//     and ggml's dequantize_row_q4_K/q6_K of those blocks equal our
//     Dequantize bit for bit. (Without -DNDEBUG ggml's nearest_int asserts on
//     rows of float32 subnormals, whose sub-block iscale is +Inf; nearestInt
//     reproduces what the release build computes there.)
//   - TestKQuantEncoders pins the SHA-256 of ggml's output for the package's
//     testRows(1, 300, 256), taken from that C build, and checks independently
//     in float64 that every code is the nearest one for the stored scales.
//   - The decoders are checked against refDecodeQ4K/refDecodeQ6K (refs_test.go).

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// searchEncoders are the formats whose encoders are checked by
// TestKQuantEncoders instead of an independent reference encoder.
var searchEncoders = map[string]bool{"q4_k": true, "q6_k": true}

// ggmlDigests is the SHA-256 of quantize_row_*_ref over testRows(1, 300, 256)
// (302 rows, one row per call), from ggml d99724f2 built as above.
var ggmlDigests = map[string]string{
	"q4_k": "b7476625e5efad78f8f16b0f08f52cfd6eacc3a0f72477e7a595b93f20001712",
	"q6_k": "762be5636e509e071b230e0a33ea0cd76efa4240543e0352097a37151ebefc53",
}

func TestKQuantEncoders(t *testing.T) {
	rows := testRows(1, 300, 256)
	for name := range searchEncoders {
		t.Run(name, func(t *testing.T) {
			tr := mustLookup(t, name)
			h := sha256.New()
			checked := 0
			for i, x := range rows {
				q := quantizeRow(t, tr, x)
				h.Write(q)
				checked += refCheckNearestCodes(t, name, i, x, q)
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != ggmlDigests[name] {
				t.Errorf("digest of %d encoded rows %s, ggml's %s", len(rows), got, ggmlDigests[name])
			}
			if checked < len(rows)*256/2 {
				t.Errorf("only %d codes had a non-zero scale to check", checked)
			}
		})
	}
}

// refCheckNearestCodes verifies, in float64 from the block definition, that
// each code of a sub-block with a non-zero coded scale is the nearest integer
// (ties to even) to (x + dmin·m)/(d·sc) (q4_k) or 32 + x/(d·sc) (q6_k),
// clamped to the code range, with the quotient rounded to float32 as ggml
// computes it. It returns the number of codes checked.
func refCheckNearestCodes(t *testing.T, name string, row int, x []float32, q []byte) int {
	t.Helper()
	bs, bb, group := 256, 144, 32
	if name == "q6_k" {
		bb, group = 210, 16
	}
	n := 0
	for b := 0; b*bb < len(q); b++ {
		blk := q[b*bb : (b+1)*bb]
		for k := 0; k < bs; k++ {
			v := float64(x[b*bs+k])
			var want, got int
			var step float64
			switch name {
			case "q4_k":
				d := refFP16Value(binary.LittleEndian.Uint16(blk))
				dmin := refFP16Value(binary.LittleEndian.Uint16(blk[2:]))
				sc, m := refScaleMinQ4K(blk[4:16], k/group)
				step = f32(d * float64(sc))
				dm := f32(dmin * float64(m))
				if step != 0 {
					want = max(0, min(15, int(math.RoundToEven(f32(f32(v+dm)/step)))))
				}
				got = int(blk[16+32*(k/64)+k%32])
				if k%64 >= 32 {
					got >>= 4
				}
				got &= 15
			case "q6_k":
				d := refFP16Value(binary.LittleEndian.Uint16(blk[refQ6KDOff:]))
				step = f32(d * float64(int8(blk[192+k/group])))
				if step != 0 {
					want = 32 + max(-32, min(31, int(math.RoundToEven(f32(v/step)))))
				}
				got = refCodeQ6K(blk, k)
			}
			if step == 0 {
				continue
			}
			n++
			if got != want {
				t.Fatalf("row %d block %d weight %d (x = %v): code %d, nearest for the stored scales %d", row, b, k, v, got, want)
			}
		}
	}
	return n
}

// refCodeQ6K returns the 6-bit code of weight k of a q6_K block (see
// refDecodeQ6K).
func refCodeQ6K(blk []byte, k int) int {
	h, r := k/128, k%128
	t, l := r/32, r%32
	lo := int(blk[64*h+32*(t%2)+l])
	if t >= 2 {
		lo >>= 4
	}
	return lo&15 | (int(blk[128+32*h+l])>>(2*t)&3)<<4
}

// mustLookup returns the traits row of name.
func mustLookup(t *testing.T, name string) Traits {
	t.Helper()
	tr, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// refScaleMinQ4K reads the 6-bit scale and min of sub-block j (see refDecodeQ4K).
func refScaleMinQ4K(s []byte, j int) (sc, m int) {
	if j < 4 {
		return int(s[j] & 0x3f), int(s[4+j] & 0x3f)
	}
	j -= 4
	return int(s[8+j]&0x0f) + int(s[j]>>6)*16, int(s[8+j]>>4) + int(s[4+j]>>6)*16
}

// TestKQuantHandChecked pins blocks worked out by hand.
func TestKQuantHandChecked(t *testing.T) {
	t.Run("q4_k", func(t *testing.T) {
		// Every sub-block holds -8..7 (twice): make_qkx2_quants fits it exactly
		// with scale 1 and min 8 (error 0, so no trial scale wins), so
		// d = fp16(1/63) = 2^-6·(1+16/1024) = 0x2410, dmin = fp16(8/63) =
		// 2^-3·(1+16/1024) = 0x3010, every 6-bit scale and min is 63 (all 12
		// scale bytes 0xff) and the codes are x+8: d·63 = 0.99975586 and
		// dmin·63 = 7.9980469 leave round((x+7.998)/0.99976) = x+8.
		x := make([]float32, 256)
		for k := range x {
			x[k] = float32((k*7)%16 - 8)
		}
		got := quantizeRow(t, mustLookup(t, "q4_k"), x)
		want := []byte{0x10, 0x24, 0x10, 0x30}
		for range 12 {
			want = append(want, 0xff)
		}
		for c := 0; c < 4; c++ {
			for l := 0; l < 32; l++ { // byte l of chunk c: weight 64c+l low, 64c+32+l high
				lo, hi := (64*c+l)*7%16, (64*c+32+l)*7%16
				want = append(want, byte(lo|hi<<4))
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("q4_k =\n% x\nwant\n% x", got, want)
		}
		deq := make([]float32, 256)
		if err := DequantizeQ4K(deq, got); err != nil {
			t.Fatal(err)
		}
		// (1040/65536·63)·q − (130/1024·63): exact in float32.
		for k, v := range deq {
			if w := float32(65520.0/65536*float64(x[k]+8) - 8190.0/1024); v != w {
				t.Fatalf("weight %d: %v, want %v", k, v, w)
			}
		}
	})
	t.Run("q6_k", func(t *testing.T) {
		// Integer groups in [-32, 31] whose first weight is -32: make_qx_quants
		// fits each exactly with scale 1 (iscale -32/max = 1, Σw·x·l = Σw·l²),
		// so d = fp16(1/(-128/1)) = -2^-7 = 0xa000, every scale is
		// min(127, -128) = -128 (0x80), d·sc = 1 and the codes are x+32.
		x := make([]float32, 256)
		for k := range x {
			x[k] = float32(k*5%63 - 31)
			if k%16 == 0 {
				x[k] = -32
			}
		}
		got := quantizeRow(t, mustLookup(t, "q6_k"), x)
		code := func(k int) byte { return byte(x[k] + 32) }
		if c := code(1); c != 6 || code(33) != 40 || code(65) != 11 || code(97) != 45 {
			t.Fatalf("test codes %d %d %d %d", code(1), code(33), code(65), code(97))
		}
		checks := []struct {
			at   int
			want byte
		}{
			{0, 0x00},                // ql[0]: weights 0 (code 0) and 64 (code 0)
			{1, 0xb6},                // ql[1]: weight 1 code 6 low, weight 65 code 11 -> 0xb high
			{33, 0xd8},               // ql[33]: weight 33 code 40 -> 8 low, weight 97 code 45 -> 0xd high
			{129, 0x88},              // qh[1]: high bits 0 (w1), 2 (w33) <<2, 0 (w65) <<4, 2 (w97) <<6
			{192, 0x80}, {207, 0x80}, // scales
			{208, 0x00}, {209, 0xa0}, // d
		}
		for _, c := range checks {
			if got[c.at] != c.want {
				t.Errorf("byte %d = %#x, want %#x", c.at, got[c.at], c.want)
			}
		}
		for k := range x { // every code through the layout formula
			if c := refCodeQ6K(got, k); c != int(code(k)) {
				t.Fatalf("weight %d code %d, want %d", k, c, code(k))
			}
		}
		deq := make([]float32, 256)
		if err := DequantizeQ6K(deq, got); err != nil {
			t.Fatal(err)
		}
		for k, v := range deq {
			if v != x[k] {
				t.Fatalf("weight %d decodes to %v, want %v", k, v, x[k])
			}
		}
	})
	t.Run("zero super-blocks", func(t *testing.T) {
		x := make([]float32, 512)
		for k := 256; k < 512; k++ {
			x[k] = 1e-17 // below GROUP_MAX_EPS in every group
		}
		for _, tr := range []Traits{mustLookup(t, "q4_k"), mustLookup(t, "q6_k")} {
			q := quantizeRow(t, tr, x)
			deq := make([]float32, 512)
			if err := tr.Dequantize(deq, q); err != nil {
				t.Fatal(err)
			}
			for k, v := range deq {
				if v != 0 {
					t.Fatalf("%s: weight %d decodes to %v", tr.Name, k, v)
				}
			}
			if tr.Name == "q6_k" && !bytes.Equal(q, make([]byte, len(q))) {
				t.Errorf("q6_k: near-zero super-blocks are not all-zero bytes")
			}
		}
	})
}

// TestKQuantErrorVsLegacy: on gaussian rows q6_k (6.56 bpw) beats q5_1 (6
// bpw) and q4_k (4.5 bpw) is within 10% of q4_1 (5 bpw).
func TestKQuantErrorVsLegacy(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	x := make([]float32, 8192)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	rel := func(name string) float64 {
		tr, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if err := tr.Dequantize(y, quantizeRow(t, tr, x)); err != nil {
			t.Fatal(err)
		}
		var se, ss float64
		for i := range x {
			e := float64(y[i]) - float64(x[i])
			se += e * e
			ss += float64(x[i]) * float64(x[i])
		}
		return math.Sqrt(se / ss)
	}
	q6k, q51, q4k, q41 := rel("q6_k"), rel("q5_1"), rel("q4_k"), rel("q4_1")
	t.Logf("relative RMS error: q6_k %.5f, q5_1 %.5f, q4_k %.5f, q4_1 %.5f", q6k, q51, q4k, q41)
	if q6k >= q51 {
		t.Errorf("q6_k error %.5f not below q5_1's %.5f", q6k, q51)
	}
	if q4k > 1.1*q41 {
		t.Errorf("q4_k error %.5f more than 10%% above q4_1's %.5f", q4k, q41)
	}
}

func TestKQuantOverflow(t *testing.T) {
	for _, tr := range []Traits{mustLookup(t, "q4_k"), mustLookup(t, "q6_k")} {
		for _, v := range []float32{1e9, -3e38, math.MaxFloat32} {
			x := withAt(512, 300, v)
			err := tr.Quantize(make([]byte, 2*tr.BlockBytes), x)
			if !errors.Is(err, ErrOverflow) {
				t.Errorf("%s with %v: error %v, want ErrOverflow", tr.Name, v, err)
			}
		}
	}
}
