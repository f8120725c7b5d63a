package models

import (
	"encoding/hex"
	"sort"
	"strconv"
	"time"
)

// GlobalWorkload names the fallback section of a model, trained over every
// destination; a request to a workload the model has no section for is
// scored against it.
const GlobalWorkload = "*"

// Meta is what a model says about its own training.
type Meta struct {
	TrainedAt time.Time
	Samples   uint64
	Seed      uint64
	// Threshold is the score above which a request is flagged, calibrated to
	// TargetFPR on held-back normal requests.
	Threshold float64
	TargetFPR float64
}

// Model scores requests. It is immutable once built or decoded and safe for
// concurrent use.
type Model struct {
	Meta      Meta
	Workloads map[string]*Workload

	sha  [32]byte
	size int
}

// Workload is the part of a model that describes one destination workload.
type Workload struct {
	Name string
	// Sources are the callers seen, sorted.
	Sources []string
	// Routes are the (method, route template) pairs seen, sorted.
	Routes []Route
	// Edges are the (source, route) pairs seen, sorted.
	Edges []Edge

	sourceIndex table
	routeIndex  table
	edgeSet     table
}

// Route is one method and route template with how often it was seen.
type Route struct {
	Method   string
	Template string
	Count    uint32
}

// Edge is a caller using a route, as indexes into Workload.Sources and
// Workload.Routes, with how often it was seen.
type Edge struct {
	Source, Route uint32
	Count         uint32
}

// SHA256 returns the hex sha256 of the model's encoding: its version.
func (m *Model) SHA256() string { return hex.EncodeToString(m.sha[:]) }

// Size returns the length of the model's encoding in bytes.
func (m *Model) Size() int { return m.size }

// Workload returns the section for a destination, else the global fallback,
// else nil.
func (m *Model) Workload(name string) *Workload {
	if m == nil {
		return nil
	}
	if w := m.Workloads[name]; w != nil {
		return w
	}
	return m.Workloads[GlobalWorkload]
}

// ReasonCode names what drove a score.
type ReasonCode uint8

// Reason codes, one per model component signal.
const (
	ReasonNone ReasonCode = iota
	// ReasonNewCaller: the source never called this destination.
	ReasonNewCaller
	// ReasonNewRoute: nobody ever used this method and route here.
	ReasonNewRoute
	// ReasonNewEdge: known caller, known route, but never this caller on it.
	ReasonNewEdge
	// ReasonUnknownDestination: no section for the destination and no
	// global fallback.
	ReasonUnknownDestination
)

var reasonNames = [...]string{
	ReasonNone:               "none",
	ReasonNewCaller:          "new_caller",
	ReasonNewRoute:           "new_route",
	ReasonNewEdge:            "new_edge",
	ReasonUnknownDestination: "unknown_destination",
}

// String returns the reason's stable snake_case name, used in headers, logs
// and reports.
func (c ReasonCode) String() string {
	if int(c) < len(reasonNames) {
		return reasonNames[c]
	}
	return "reason_" + strconv.Itoa(int(c))
}

// Component returns the model component a reason belongs to.
func (c ReasonCode) Component() string {
	switch c {
	case ReasonNewCaller, ReasonNewRoute, ReasonNewEdge, ReasonUnknownDestination:
		return "graph"
	}
	return "none"
}

// Reason is one contribution to a score.
type Reason struct {
	Code  ReasonCode
	Score float64
}

// MaxReasons bounds the reasons a Verdict carries.
const MaxReasons = 4

// Verdict is the outcome of scoring one request.
type Verdict struct {
	// Score is the anomaly score in [0,1].
	Score float64
	// Scored is false when the model could not judge the request (no
	// section for its destination and no fallback); Score is then 0.
	Scored  bool
	Reasons [MaxReasons]Reason
	NReason int
}

// ReasonList returns the reasons as a slice, strongest first.
func (v *Verdict) ReasonList() []Reason { return v.Reasons[:v.NReason] }

// addReason records a contribution, keeping the strongest MaxReasons.
func (v *Verdict) addReason(code ReasonCode, score float64) {
	if score <= 0 {
		return
	}
	i := v.NReason
	if i == MaxReasons {
		if v.Reasons[i-1].Score >= score {
			return
		}
		i--
	} else {
		v.NReason++
	}
	for i > 0 && v.Reasons[i-1].Score < score {
		v.Reasons[i] = v.Reasons[i-1]
		i--
	}
	v.Reasons[i] = Reason{Code: code, Score: score}
}

// Component scores of the caller graph. An unseen caller is the strongest
// lateral-movement signal; an unseen route is almost as strong; a known
// caller on a known route it never used is weaker (it happens when a release
// starts using an existing endpoint).
const (
	scoreNewCaller = 0.95
	scoreNewRoute  = 0.9
	scoreNewEdge   = 0.7
)

// Score judges one request against the section for its destination (or the
// global fallback). It does not allocate.
func (m *Model) Score(r *Request) Verdict {
	w := m.Workload(r.Destination)
	if w == nil {
		var v Verdict
		v.addReason(ReasonUnknownDestination, 1)
		return v
	}
	return w.Score(r)
}

// Score judges one request against this section, whatever its Destination
// says: a filter resolves its workload's section once and calls this. It
// does not allocate.
func (w *Workload) Score(r *Request) Verdict {
	var v Verdict
	v.Scored = true
	var buf [MaxRouteBytes + 8]byte
	tmpl := AppendTemplate(buf[:0], r.Path)
	src := hashString(fnvOffset, r.Source)
	route := hashBytes(hashString(fnvOffset, r.Method), tmpl)

	si, srcKnown := w.sourceIndex.get(src)
	ri, routeKnown := w.routeIndex.get(route)
	if !srcKnown && len(w.Sources) > 0 {
		v.addReason(ReasonNewCaller, scoreNewCaller)
	}
	if !routeKnown && len(w.Routes) > 0 {
		v.addReason(ReasonNewRoute, scoreNewRoute)
	}
	if srcKnown && routeKnown {
		if _, ok := w.edgeSet.get(edgeKey(si, ri)); !ok {
			v.addReason(ReasonNewEdge, scoreNewEdge)
		}
	}
	v.Score = combine(&v)
	return v
}

// combine merges component scores as a noisy-OR: independent pieces of
// evidence reinforce each other, and the result stays in [0,1].
func combine(v *Verdict) float64 {
	p := 1.0
	for _, r := range v.ReasonList() {
		p *= 1 - r.Score
	}
	return 1 - p
}

// index builds the lookup tables of a workload from its slices.
func (w *Workload) index() {
	w.sourceIndex = newTable(len(w.Sources))
	for i, s := range w.Sources {
		w.sourceIndex.put(hashString(fnvOffset, s), uint32(i))
	}
	w.routeIndex = newTable(len(w.Routes))
	for i, r := range w.Routes {
		w.routeIndex.put(hashString(hashString(fnvOffset, r.Method), r.Template), uint32(i))
	}
	w.edgeSet = newTable(len(w.Edges))
	for _, e := range w.Edges {
		w.edgeSet.put(edgeKey(e.Source, e.Route), 1)
	}
}

// sortWorkload puts sources, routes and edges in their canonical order (the
// codec's output must not depend on map iteration).
func (w *Workload) sortCanonical() {
	srcOrder := make([]int, len(w.Sources))
	for i := range srcOrder {
		srcOrder[i] = i
	}
	sort.Slice(srcOrder, func(a, b int) bool { return w.Sources[srcOrder[a]] < w.Sources[srcOrder[b]] })
	routeOrder := make([]int, len(w.Routes))
	for i := range routeOrder {
		routeOrder[i] = i
	}
	sort.Slice(routeOrder, func(a, b int) bool {
		ra, rb := w.Routes[routeOrder[a]], w.Routes[routeOrder[b]]
		if ra.Template != rb.Template {
			return ra.Template < rb.Template
		}
		return ra.Method < rb.Method
	})
	newSrc := make([]uint32, len(w.Sources))
	sources := make([]string, len(w.Sources))
	for to, from := range srcOrder {
		newSrc[from] = uint32(to)
		sources[to] = w.Sources[from]
	}
	newRoute := make([]uint32, len(w.Routes))
	routes := make([]Route, len(w.Routes))
	for to, from := range routeOrder {
		newRoute[from] = uint32(to)
		routes[to] = w.Routes[from]
	}
	for i := range w.Edges {
		w.Edges[i].Source = newSrc[w.Edges[i].Source]
		w.Edges[i].Route = newRoute[w.Edges[i].Route]
	}
	sort.Slice(w.Edges, func(a, b int) bool {
		ea, eb := w.Edges[a], w.Edges[b]
		if ea.Source != eb.Source {
			return ea.Source < eb.Source
		}
		return ea.Route < eb.Route
	})
	w.Sources, w.Routes = sources, routes
}

func edgeKey(src, route uint32) uint64 { return uint64(src)<<32 | uint64(route) }

// FNV-1a, 64-bit: cheap, allocation-free, and identical on every platform.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	// A separator keeps ("ab","c") and ("a","bc") apart.
	h ^= 0xff
	h *= fnvPrime
	return h
}

func hashBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	h ^= 0xff
	h *= fnvPrime
	return h
}
