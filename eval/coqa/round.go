package coqa

import (
	"math"
	"math/big"
	"strconv"
)

// PyRound reproduces Python's round(x, ndigits) for a float and ndigits >= 0:
// the exact binary value of x is rounded to ndigits decimals with ties to even
// (ties occur only when the double is exactly halfway, e.g. 0.25, not for
// 0.35, whose double is below the half), and the decimal result is converted
// back to the nearest double. NaN and infinities are returned unchanged.
func PyRound(x float64, ndigits int) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) || ndigits < 0 {
		return x
	}
	r := new(big.Rat).SetFloat64(x) // exact
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(ndigits)), nil)
	r.Mul(r, new(big.Rat).SetInt(scale))
	neg := r.Sign() < 0
	r.Abs(r)
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	// Compare the remainder with half the denominator: 2m vs d.
	m.Lsh(m, 1)
	switch c := m.Cmp(r.Denom()); {
	case c > 0, c == 0 && q.Bit(0) == 1:
		q.Add(q, big.NewInt(1))
	}
	res := new(big.Rat).SetFrac(q, scale)
	s := res.FloatString(ndigits)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil { // cannot happen for a finite input
		return x
	}
	if neg {
		f = -f
	}
	return f
}
