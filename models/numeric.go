package models

import "math"

// Per-route numeric baselines: how large requests and responses are and
// which status classes answer them. Sizes are described on a log scale
// (log1p bytes) by their mean and variance, and a size surprises by the
// Chebyshev bound on how far above the mean it lies; a status class
// surprises by how rarely the route answered with it. Response signals apply
// only when the response is known (Status ≠ 0): in the filter's response
// phase, and in replay.

// NumStat summarises one numeric feature: count, mean and M2 (Welford) of
// log1p(value).
type NumStat struct {
	N        uint32
	Mean, M2 float64
}

func (s *NumStat) observe(x int64) {
	if x < 0 {
		return
	}
	v := math.Log1p(float64(x))
	s.N++
	d := v - s.Mean
	s.Mean += d / float64(s.N)
	s.M2 += d * (v - s.Mean)
}

// minNumObs is how many observations a baseline needs before it judges.
const minNumObs = 16

// surpriseAbove is the surprise (nats) of a value this far above the mean:
// -log of the Chebyshev bound σ²/d², with a floor on σ of a quarter of an
// e-fold so that a constant size does not make every other size infinitely
// surprising.
func (s *NumStat) surpriseAbove(x int64) float64 {
	if s.N < minNumObs || x <= 0 {
		return 0
	}
	d := math.Log1p(float64(x)) - s.Mean
	if d <= 0 {
		return 0
	}
	variance := math.Max(s.M2/float64(s.N), 1.0/16)
	if p := variance / (d * d); p < 1 {
		return -math.Log(p)
	}
	return 0
}

// Numbers is the numeric baseline of one route.
type Numbers struct {
	RequestBytes, ResponseBytes NumStat
	// Status counts responses by class: 1xx … 5xx at 0 … 4.
	Status [5]uint32
}

func (n *Numbers) observe(r *Request) {
	n.RequestBytes.observe(requestBytes(r))
	if r.Status >= 100 && r.Status < 600 {
		n.Status[r.Status/100-1]++
		n.ResponseBytes.observe(r.ResponseBytes)
	}
}

func requestBytes(r *Request) int64 {
	if r.RequestBytes > 0 {
		return r.RequestBytes
	}
	return int64(len(r.Body))
}

// numericSurprise adds the route's numeric signals to v.
func (n *Numbers) numericSurprise(r *Request, v *Verdict) {
	if s := n.RequestBytes.surpriseAbove(requestBytes(r)); s > 0 {
		v.add(ReasonRequestSize, s)
	}
	if r.Status < 100 || r.Status >= 600 {
		return
	}
	var total uint32
	for _, c := range n.Status {
		total += c
	}
	if total >= minNumObs {
		p := (float64(n.Status[r.Status/100-1]) + 0.5) / (float64(total) + 2.5)
		// Only the unusual: a class the route answers with half the time or
		// more costs nothing.
		if s := -math.Log(p) - math.Log(2); s > 0 {
			v.add(ReasonStatus, s)
		}
	}
	if s := n.ResponseBytes.surpriseAbove(r.ResponseBytes); s > 0 {
		v.add(ReasonResponseSize, s)
	}
}
