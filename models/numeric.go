package models

import "math"

// Per-route numeric baselines: how large requests and responses are and
// which status classes answer them. Sizes are described on a log scale
// (log1p bytes) by their mean and variance, and a size surprises by how many
// standard deviations above the mean it lies (Laplace tail); a status class
// surprises by how rarely the workload answers with it. Response signals apply
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

// surpriseAbove is the surprise (nats) of a value this far above the mean,
// taking the log-sizes to have a Laplace tail (heavier than normal, as sizes
// are): P(Z > z) = ½·e^(−√2·z) for z standard deviations, so the surprise
// grows linearly with z. The spread has a floor of a quarter of an e-fold so
// that a constant size does not make every other size infinitely surprising.
func (s *NumStat) surpriseAbove(x int64) float64 {
	if s.N < minNumObs || x <= 0 {
		return 0
	}
	sd := math.Max(math.Sqrt(s.M2/float64(s.N)), 0.25)
	z := (math.Log1p(float64(x)) - s.Mean) / sd
	if z <= 1 {
		return 0
	}
	return math.Sqrt2*z - math.Ln2
}

// Numbers is the numeric baseline of one route.
type Numbers struct {
	RequestBytes, ResponseBytes NumStat
	// Status counts responses by class: 1xx … 5xx at 0 … 4.
	Status [5]uint32
	// MaxRequestBytes is the largest request body the route was sent.
	MaxRequestBytes uint64
}

func (n *Numbers) observe(r *Request) {
	n.RequestBytes.observe(requestBytes(r))
	if b := requestBytes(r); b > 0 {
		n.MaxRequestBytes = max(n.MaxRequestBytes, uint64(b))
	}
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

// statusPrior is how many observations the workload's status mix is worth
// as the prior of one route's: a lot, because a route's own handful of
// errors is mostly sampling noise around the workload's error rate.
const statusPrior = 1000.0

// requestSurprise records the route's request-size signals in v: a size
// far above the route's typical (Laplace tail), and bytes beyond the
// largest body it was ever sent, a signal of its own: of N requests, the
// next exceeds them all with probability 1/(N+1), and each doubling beyond
// halves that again. Padding a payload past what a filter reads is how
// size evades inspection; it cannot evade this.
func (n *Numbers) requestSurprise(b int64, v *Verdict) {
	if s := n.RequestBytes.surpriseAbove(b); s > 0 {
		v.part(PartSize, ReasonRequestSize, s)
	}
	if n.RequestBytes.N >= minNumObs && uint64(b) > n.MaxRequestBytes {
		s := math.Log(float64(n.RequestBytes.N)+1) + math.Log(float64(b)/float64(max(n.MaxRequestBytes, 1)))
		v.part(PartSize, ReasonBodyBeyond, s)
	}
}

// responseSurprise adds the route's response signals to v (nothing when the
// response is unknown); workload is the status mix of the whole workload,
// the prior of a route's.
func (n *Numbers) responseSurprise(r *Request, v *Verdict, workload *[5]uint32) {
	if r.Status < 100 || r.Status >= 600 {
		return
	}
	var total uint32
	for _, c := range n.Status {
		total += c
	}
	if total >= minNumObs {
		var wTotal uint32
		for _, c := range workload {
			wTotal += c
		}
		class := r.Status/100 - 1
		prior := (float64(workload[class]) + 0.5) / (float64(wTotal) + 2.5)
		p := (float64(n.Status[class]) + statusPrior*prior) / (float64(total) + statusPrior)
		// Only the unusual: a class the route answers with half the time or
		// more costs nothing.
		if s := -math.Log(p) - math.Log(2); s > 0 {
			v.part(PartStatus, ReasonStatus, s)
		}
	}
	if s := n.ResponseBytes.surpriseAbove(r.ResponseBytes); s > 0 {
		v.part(PartResponseSize, ReasonResponseSize, s)
	}
}
