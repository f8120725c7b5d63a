package models

import "math"

// The scoring path's exponentials and logarithms. Compiled to WebAssembly,
// math.Exp, math.Exp2 and math.Log are calls into calls (exp, expmulti,
// ldexp; log, frexp) with their special cases, and the few of them that
// judging a request takes (combine, calibrate) cost the filter about 3 µs
// a request under wazero, as much as reading the request. These are
// written out, with no call, for the arguments scoring meets, and fall
// back to package math for the rest; they agree with it to about 1e-15
// (TestFastMathAgreesWithMath).

const (
	ln2Hi  = 6.93147180369123816490e-01 // the high bits of ln 2, as math.Exp splits it
	ln2Lo  = 1.90821492927058770002e-10
	log2e  = 1.44269504088896338700e+00
	sqrt2  = 1.41421356237309504880
	expMax = 709.0  // e^x overflows beyond about 709.78
	expMin = -708.0 // e^x is subnormal below about -708.4
)

// expFast returns e^x.
func expFast(x float64) float64 {
	if !(x > expMin && x < expMax) {
		return math.Exp(x) // NaN, infinities, overflow, subnormal results
	}
	// x = k·ln 2 + r, |r| ≤ ln 2 / 2.
	// k = x/ln 2 rounded (half away from 0), by conversion: math.Floor
	// is a call in wasm.
	t := x * log2e
	var k int64
	if t >= 0 {
		k = int64(t + 0.5)
	} else {
		k = int64(t - 0.5)
	}
	kf := float64(k)
	r := (x - kf*ln2Hi) - kf*ln2Lo
	// e^r by its Taylor series to r^13/13!: |r| ≤ 0.347 puts the first
	// term left out below 2e-16 of the result.
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040+r*(1.0/40320+
		r*(1.0/362880+r*(1.0/3628800+r*(1.0/39916800+r*(1.0/479001600+r*(1.0/6227020800)))))))))))))
	// Times 2^k, k within the normal exponents here.
	return p * math.Float64frombits(uint64(k+1023)<<52)
}

// logFast returns ln x.
func logFast(x float64) float64 {
	if !(x >= 0x1p-1022 && x <= math.MaxFloat64) {
		return math.Log(x) // NaN, zero, negatives, subnormals, +Inf
	}
	// x = m·2^e with m in [√2/2, √2).
	b := math.Float64bits(x)
	e := int64(b>>52) - 1023
	m := math.Float64frombits(b&(1<<52-1) | 1023<<52)
	if m > sqrt2 {
		m /= 2
		e++
	}
	// ln m = 2·atanh(s), s = (m-1)/(m+1), |s| ≤ 0.1716: the series to s^23
	// leaves out less than 1e-18.
	s := (m - 1) / (m + 1)
	z := s * s
	t := 1 + z*(1.0/3+z*(1.0/5+z*(1.0/7+z*(1.0/9+z*(1.0/11+z*(1.0/13+z*(1.0/15+z*(1.0/17+
		z*(1.0/19+z*(1.0/21+z*(1.0/23)))))))))))
	ef := float64(e)
	return ef*ln2Hi + (2*s*t + ef*ln2Lo)
}

// maxf returns the larger of a and b, for the scoring path's surprises,
// which are never NaN. The builtin max of two floats is a call to the
// runtime's fmax64 compiled to WebAssembly (it orders NaNs and zeros);
// this is one comparison, inlined.
func maxf(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}

// minf is maxf's counterpart for the smaller.
func minf(a, b float64) float64 {
	if a < b {
		return a
	}
	return b
}
