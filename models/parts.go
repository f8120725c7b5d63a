package models

import (
	"math"
	"sort"
)

// Parts: each signal of the model is judged against its own normal tail,
// then the parts are combined so that one strong part is not averaged away
// by a noisy one.
//
// Every part measures a surprise in nats (-log of how likely its own model
// of normal traffic makes what it sees). Those scales are not comparable: the
// caller graph's and parameter names' surprises are Good-Turing
// probabilities of meeting something new, already p-values; a value's or the
// content model's are -log likelihoods whose normal spread depends on the
// traffic (free text spreads far, identifiers do not). So each part other
// than the structural ones has a Tail, fitted on held-back normal requests,
// that turns its surprise into a tail surprise: -ln of the share of normal
// requests at least as surprising. The structural parts are summed (they
// are rare and nearly independent events, so their probabilities multiply)
// and the request's p-value is the harmonic mean of the parts' (combine).
// See docs/model.md for why not a sum (Fisher, Stouffer): a sum lets the
// noisiest part set the tail.

// Part names one signal of the model.
type Part uint8

// The parts. The first four are structural (Good-Turing novelty, already
// probabilities); the rest are calibrated by a Tail.
const (
	// PartCaller: a caller the destination never had (or no section).
	PartCaller Part = iota
	// PartRoute: a route the destination never served, more so when it is
	// a known route with something appended (a backup-file probe).
	PartRoute
	// PartEdge: a known caller on a known route it never used.
	PartEdge
	// PartNames: a parameter name the route never carried.
	PartNames
	// PartValues: the value least like its parameter's (shape, length,
	// keywords, an enumerated parameter's unseen value), against the
	// parameter's own normal tail.
	PartValues
	// PartSize: a request larger than the route's, or beyond any it sent.
	PartSize
	// PartContent: the request lexically unlike normal ones as a whole,
	// and character sequences no normal request had, priced by how open
	// the parameter that carries them is.
	PartContent
	// PartStatus and PartResponseSize judge the response, once known.
	PartStatus
	PartResponseSize
	// NParts is the number of parts.
	NParts
)

// requestParts are the parts a request phase combines (the response
// phase adds the two response parts).
const requestParts = PartStatus

var partNames = [NParts]string{"caller", "route", "edge", "names", "values", "size", "content", "status", "response_size"}

// String returns the part's snake_case name.
func (p Part) String() string {
	if p < NParts {
		return partNames[p]
	}
	return "part"
}

// partStructure is where Workload.Tails keeps the structural sum's tail.
// The structural parts (PartCaller to PartNames) are Good-Turing
// probabilities already: they are summed, and the sum is only ever lowered
// by its Tail: when held-back normal requests meet new names or routes more
// often than training's counts said, the data wins; when they never do,
// the Good-Turing estimate stands beyond them.
const partStructure = PartCaller

// calibrated reports whether the part has a Tail of its own in
// Workload.Tails (the structural sum's is kept at partStructure).
func (p Part) calibrated() bool { return p == partStructure || p >= PartValues }

// Tail maps a part's surprise to its tail surprise: -ln of the share of
// held-back normal requests whose part was at least as surprising.
// Below the first knot and between knots it interpolates linearly; beyond
// the last, each nat of surprise adds Slope nats (an exponential tail,
// fitted on the held-back requests beyond the last knot). A zero Tail
// (Slope 0) leaves the surprise as it is.
type Tail struct {
	// Zero is the tail surprise of any positive surprise: -ln of the share
	// of held-back requests on which the part said anything at all.
	Zero float32
	// X holds ascending surprises and T the tail surprises at them.
	X, T []float32
	// Slope is the tail surprise each nat beyond the last knot adds.
	Slope float32
}

// maxKnots bounds a Tail's knots.
const maxKnots = 12

// Surprise returns the tail surprise of a part's surprise s.
func (t *Tail) Surprise(s float64) float64 { return t.surprise(s) }

// surprise returns the tail surprise of a part's surprise s.
func (t *Tail) surprise(s float64) float64 {
	if s <= 0 {
		return 0
	}
	if t.Slope == 0 {
		return s
	}
	x0, t0 := 0.0, float64(t.Zero)
	for i := range t.X {
		x1, t1 := float64(t.X[i]), float64(t.T[i])
		if s <= x1 {
			return t0 + (t1-t0)*(s-x0)/(x1-x0)
		}
		x0, t0 = x1, t1
	}
	return t0 + float64(t.Slope)*(s-x0)
}

// inverse returns the surprise whose tail surprise is t (the least, where
// the tail is flat).
func (t *Tail) inverse(ts float64) float64 {
	if ts <= 0 {
		return 0
	}
	if t.Slope == 0 {
		return ts
	}
	x0, t0 := 0.0, float64(t.Zero)
	if ts <= t0 {
		return math.SmallestNonzeroFloat64
	}
	for i := range t.X {
		x1, t1 := float64(t.X[i]), float64(t.T[i])
		if ts <= t1 {
			return x0 + (x1-x0)*(ts-t0)/(t1-t0)
		}
		x0, t0 = x1, t1
	}
	return x0 + (ts-t0)/float64(t.Slope)
}

// Tail fitting: knots where at least minTailPoints held-back requests lie
// at or beyond, at these shares; the slope beyond from the mean excess of
// the requests beyond the last knot (an exponential tail), within
// [minSlope, maxSlope].
const (
	minTailPoints = 5
	minSlope      = 1.0 / 16
	maxSlope      = 1
)

var tailShares = [...]float64{0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001}

// fitTail fits a Tail to the surprises one part gave held-back normal
// requests. It sorts xs.
func fitTail(xs []float64) Tail {
	n := len(xs)
	if n == 0 {
		return Tail{}
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(xs)))
	pos := sort.Search(n, func(i int) bool { return xs[i] <= 0 })
	share := func(k int) float64 { return float64(k+1) / float64(n+1) }
	t := Tail{Zero: float32(-math.Log(share(pos)))}
	lastK, lastX := pos, 0.0
	for _, q := range tailShares {
		k := int(math.Ceil(q * float64(n)))
		if k < minTailPoints || k >= pos {
			continue
		}
		x := xs[k-1]
		if x <= lastX || len(t.X) == maxKnots {
			continue
		}
		t.X = append(t.X, float32(x))
		t.T = append(t.T, float32(-math.Log(share(k))))
		lastK, lastX = k, x
	}
	// The requests beyond the last knot (or every positive one) give the
	// slope; with too few of them, a nat of surprise is taken as a nat of
	// tail.
	t.Slope = 1
	if lastK >= minTailPoints {
		var excess float64
		for _, x := range xs[:lastK] {
			excess += x - lastX
		}
		t.Slope = maxSlope
		if excess > 0 {
			t.Slope = float32(min(maxSlope, max(minSlope, float64(lastK)/excess)))
		}
	}
	return t
}

// combine returns the surprise of the request as a whole: -ln of the
// harmonic mean p-value (Wilson, PNAS 2019) of the structural sum and the
// other parts up to last, ln(Σ e^t) - ln K over their K tail surprises t.
// It is valid however the parts depend on each other; one strong part
// counts as its own p-value times K (Bonferroni), and several moderately
// strong ones add up, where a sum of surprises (Fisher) would let a
// request's many ordinary parts dilute one strong part, and the noisiest
// part set the tail.
//
// tails holds the tail surprises of the n calibrated parts from PartValues.
func combine(structural float64, tails *[8]float32, n int) float64 {
	best, silent := structural, 0
	if structural == 0 {
		silent++
	}
	for _, t := range tails[:n] {
		best = maxf(best, float64(t))
		if t == 0 {
			silent++
		}
	}
	if best == 0 {
		return 0
	}
	// Σ e^t, the silent parts' e^0 = 1 each at once: an exponential costs
	// in wasm (expFast), and most parts of most requests are silent.
	// Factored by e^best only where e^t could overflow.
	shift, sum := 0.0, float64(silent)
	if best > 500 {
		shift, sum = best, float64(silent)*expFast(-best)
	}
	if structural > 0 {
		sum += expFast(structural - shift)
	}
	for _, t := range tails[:n] {
		if t > 0 {
			sum += expFast(float64(t) - shift)
		}
	}
	return maxf(0, shift+logFast(sum/float64(n+1)))
}
