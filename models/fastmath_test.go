package models

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestFastMathAgreesWithMath: the scoring path's exponential and logarithm
// give package math's results to about 1e-15, and its own for what they do
// not cover (NaN, infinities, zero, negatives, the edges of the range).
func TestFastMathAgreesWithMath(t *testing.T) {
	g := rand.New(rand.NewPCG(9, 10))
	rel := func(got, want float64) float64 {
		if got == want {
			return 0
		}
		return math.Abs(got-want) / math.Abs(want)
	}
	for i := 0; i < 200000; i++ {
		x := (g.Float64()*2 - 1) * 720
		if i%2 == 0 {
			x = (g.Float64()*2 - 1) * 40 // where scores live
		}
		if d := rel(expFast(x), math.Exp(x)); d > 4e-15 {
			t.Fatalf("expFast(%v) = %v, math.Exp %v (relative error %g)", x, expFast(x), math.Exp(x), d)
		}
		y := math.Exp(x)
		if i%3 == 0 {
			y = g.Float64() * 1e6
		}
		if d := math.Abs(logFast(y) - math.Log(y)); d > 4e-15*math.Max(1, math.Abs(math.Log(y))) {
			t.Fatalf("logFast(%v) = %v, math.Log %v (error %g)", y, logFast(y), math.Log(y), d)
		}
	}
	for _, x := range []float64{0, 1, -1, 0.5, math.Ln2, -math.Ln2 / 2, math.Ln2 / 2, 708, -707.9, 709.5, -745, -746, 710, 1e308, math.Inf(1), math.Inf(-1), math.NaN(), math.SmallestNonzeroFloat64, 0x1p-1022, math.MaxFloat64, -1e-300} {
		if e, w := expFast(x), math.Exp(x); !(e == w || rel(e, w) < 4e-15 || math.IsNaN(e) && math.IsNaN(w)) {
			t.Errorf("expFast(%v) = %v, math.Exp %v", x, e, w)
		}
		if l, w := logFast(x), math.Log(x); !(l == w || math.Abs(l-w) < 4e-15*math.Max(1, math.Abs(w)) || math.IsNaN(l) && math.IsNaN(w)) {
			t.Errorf("logFast(%v) = %v, math.Log %v", x, l, w)
		}
	}
}

func BenchmarkFastMath(b *testing.B) {
	xs := make([]float64, 1024)
	g := rand.New(rand.NewPCG(1, 1))
	for i := range xs {
		xs[i] = g.Float64() * 20
	}
	var sink float64
	b.Run("math", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sink += math.Log(math.Exp(xs[i%1024]) + 1)
		}
	})
	b.Run("fast", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sink += logFast(expFast(xs[i%1024]) + 1)
		}
	})
	_ = sink
}
