package models

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/bits"
	"sort"
	"strconv"
	"sync"
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
	// Content is the content model every section shares, or nil.
	Content *ContentModel
	// SectionFor is set on a model decoded from a section (see the codec):
	// the workload the section is for, or GlobalWorkload for the fallback
	// section. Workloads then holds that one part (none for an empty
	// fallback). It is "" for a whole-mesh model.
	SectionFor string

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
	// Params are the parameter models, sorted by route then name; the one
	// with Route AnyRoute and Name AnyParam covers every value.
	Params []ParamModel
	// CalBase and CalCenter calibrate scores: CalBase is the median surprise
	// of held-back normal requests, CalCenter the surprise that TargetFPR of
	// them exceeded. A request's score is
	// 1 - 2^(-max(0, surprise-CalBase)/(CalCenter-CalBase)): 0 for a typical
	// request, 0.5 at CalCenter, towards 1 beyond.
	CalBase, CalCenter float64
	// RespBase and RespCenter calibrate the same way once the response is
	// known (status and size count too), so the response phase keeps its
	// own false-positive rate; zero when training saw no responses.
	RespBase, RespCenter float64

	sourceIndex table
	routeIndex  table
	edgeSet     table
	paramIndex  table
	anyParam    int // index of the AnyRoute/AnyParam model, or -1
	requests    float64
	// Good-Turing estimates of meeting something new, from the number of
	// callers, routes, edges and header names seen exactly once.
	pNewCaller, pNewRoute, pNewEdge, pNewHeader float64
	// statusMix counts the workload's responses by status class.
	statusMix [5]uint32
	// content is the model's content model (shared by every section), or nil.
	content *ContentModel
}

// Route is one method and route template with how often it was seen, and
// how its parameter names behaved: ParamObs parameter occurrences, of which
// ParamSingletons names were seen only once.
type Route struct {
	Method          string
	Template        string
	Count           uint32
	ParamObs        uint32
	ParamSingletons uint32
	Numbers         Numbers
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
	// ReasonNewParam: a parameter or header this route never carried.
	ReasonNewParam
	// ReasonValueShape: a value whose characters follow each other in a way
	// this parameter's values never did (quotes, brackets, operators…).
	ReasonValueShape
	// ReasonValueLength: a value far longer than this parameter's values.
	ReasonValueLength
	// ReasonKeywords: SQL, shell, script or traversal tokens where this
	// parameter rarely had any.
	ReasonKeywords
	// ReasonNewValue: an unseen value of a parameter that takes few values.
	ReasonNewValue
	// ReasonRequestSize: a request body far larger than the route's.
	ReasonRequestSize
	// ReasonStatus: a response status class the route rarely answers with.
	ReasonStatus
	// ReasonResponseSize: a response far larger than the route's (exfiltration).
	ReasonResponseSize
)

// ReasonContent: the request is lexically unlike normal requests (content
// model). ReasonContent+1+f names content feature f as what drove it
// ("content_sql_tokens").
// ReasonContentNovel: character sequences no normal request had.
const (
	ReasonContent      ReasonCode = 32
	ReasonContentNovel ReasonCode = ReasonContent + 1 + NContent
)

var reasonNames = [...]string{
	ReasonNone:               "none",
	ReasonNewCaller:          "new_caller",
	ReasonNewRoute:           "new_route",
	ReasonNewEdge:            "new_edge",
	ReasonUnknownDestination: "unknown_destination",
	ReasonNewParam:           "new_param",
	ReasonValueShape:         "value_shape",
	ReasonValueLength:        "value_length",
	ReasonKeywords:           "keywords",
	ReasonNewValue:           "new_value",
	ReasonRequestSize:        "request_size",
	ReasonStatus:             "status",
	ReasonResponseSize:       "response_size",
}

// String returns the reason's stable snake_case name, used in headers, logs
// and reports.
func (c ReasonCode) String() string {
	if c == ReasonContent {
		return "content"
	}
	if c == ReasonContentNovel {
		return "content_novel_trigrams"
	}
	if c > ReasonContent && c <= ReasonContent+NContent {
		return "content_" + ContentFeature(c-ReasonContent-1).String()
	}
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
	case ReasonNewParam, ReasonValueShape, ReasonValueLength, ReasonKeywords, ReasonNewValue:
		return "params"
	case ReasonRequestSize, ReasonStatus, ReasonResponseSize:
		return "numbers"
	}
	if c >= ReasonContent && c <= ReasonContentNovel {
		return "content"
	}
	return "none"
}

// Reason is one contribution to a score: its surprise in nats (-log of how
// likely normal traffic makes it), and for parameter reasons the index of the
// parameter model involved (or -1).
type Reason struct {
	Code     ReasonCode
	Surprise float64
}

// MaxReasons bounds the reasons a Verdict carries.
const MaxReasons = 4

// Verdict is the outcome of scoring one request.
type Verdict struct {
	// Score is the calibrated anomaly score in [0,1]: 0.5 where the
	// model's held-back normal traffic reached its target false-positive rate.
	Score float64
	// Surprise is the uncalibrated sum of every component's surprise (nats).
	Surprise float64
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
		if v.Reasons[i-1].Surprise >= score {
			return
		}
		i--
	} else {
		v.NReason++
	}
	for i > 0 && v.Reasons[i-1].Surprise < score {
		v.Reasons[i] = v.Reasons[i-1]
		i--
	}
	v.Reasons[i] = Reason{Code: code, Surprise: score}
}

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

// Scratch is working memory for scoring one request at a time. Scoring with
// a Scratch the caller keeps (one per goroutine, or per filter instance)
// allocates nothing.
type Scratch struct{ params paramScratch }

var scratchPool = sync.Pool{New: func() any { return new(Scratch) }}

// Score judges one request against this section, whatever its Destination
// says. It borrows a Scratch from a pool; ScoreWith takes the caller's.
func (w *Workload) Score(r *Request) Verdict {
	s := scratchPool.Get().(*Scratch)
	v := w.ScoreWith(r, s)
	scratchPool.Put(s)
	return v
}

// KnowsSource reports whether this section learned the source calling its
// workload: a request from any other source is on a new edge. It does not
// allocate.
func (w *Workload) KnowsSource(source string) bool {
	_, ok := w.sourceIndex.get(hashString(hashSeed, source))
	return ok
}

// ScoreWith judges one request against this section using the caller's
// scratch memory: a filter resolves its workload's section once and calls
// this. It does not allocate.
func (w *Workload) ScoreWith(r *Request, s *Scratch) Verdict {
	var v Verdict
	w.ScoreInto(r, s, &v)
	return v
}

// ScoreInto is ScoreWith writing the verdict into v, whose score, surprise
// and reasons it resets (Reasons past NReason are left as they were): in
// wasm, returning a Verdict by value costs a memory.copy.
func (w *Workload) ScoreInto(r *Request, s *Scratch, v *Verdict) {
	v.Score, v.Surprise, v.NReason = 0, 0, 0
	w.surprise(r, &s.params, v)
	v.Scored = true
	if r.Status != 0 && w.RespCenter > 0 {
		v.Score = calibrate(v.Surprise, w.RespBase, w.RespCenter)
	} else {
		v.Score = calibrate(v.Surprise, w.CalBase, w.CalCenter)
	}
}

// calibrate maps a surprise to [0,1]: towards 0 below base, 0.5 at center,
// towards 1 beyond. Below base the score stays under scoreFloor but keeps
// decreasing with the surprise, so scores rank every request (a report's
// ROC curve, a top-N of the least typical normal requests) instead of
// tying half of them at 0.
func calibrate(surprise, base, center float64) float64 {
	span := center - base
	if span < minCalSpan {
		span = minCalSpan
	}
	g := scoreFloor
	if d := surprise - base; d >= 0 {
		// math.Max(g, d/span) without its call (two, compiled to
		// WebAssembly): g is positive, so only NaN needs its own test.
		if x := d / span; x > g || x != x {
			g = x
		}
	} else {
		g *= math.Exp(d)
	}
	return 1 - math.Exp2(-g)
}

// scoreFloor bounds (as -log2 of 1 minus it) the score of a request at or
// below the typical surprise: about 7e-7.
const scoreFloor = 1e-6

// surprise sums what every component finds unusual about r into v.
func (w *Workload) surprise(r *Request, s *paramScratch, v *Verdict) {
	// The template is built in the scratch: a zeroed local array would be a
	// memory.fill per request in wasm.
	tmpl, plain := appendTemplate(s.route[:0], r.Path)
	src := hashString(hashSeed, r.Source)
	route := hashBytes(hashString(hashSeed, r.Method), tmpl)

	// Caller graph: meeting a caller, route or edge never seen, weighed by
	// how often training met new ones (Good-Turing).
	si, srcKnown := w.sourceIndex.get(src)
	ri, routeKnown := w.routeIndex.get(route)
	if !srcKnown && len(w.Sources) > 0 {
		v.add(ReasonNewCaller, -math.Log(w.pNewCaller))
	}
	if !routeKnown && len(w.Routes) > 0 {
		v.add(ReasonNewRoute, -math.Log(w.pNewRoute))
	}
	if srcKnown && routeKnown {
		if _, ok := w.edgeSet.get(edgeKey(si, ri)); !ok {
			v.add(ReasonNewEdge, -math.Log(w.pNewEdge))
		}
	}

	// The numeric signals are asked for only when there is a number to
	// judge (a request without a body, a response not yet known, add
	// nothing): compiled to WebAssembly, the calls cost even when they do
	// nothing.
	if routeKnown && requestBytes(r) > 0 {
		w.Routes[ri].Numbers.requestSurprise(r, v)
	}
	w.paramSurprise(r, s, v, ri, routeKnown)
	w.contentSurprise(r, s, v, routeKnown && plain)
	// Response signals come last, so that adding them to a request-phase
	// verdict (RespondWith) sums in the same order as scoring at once.
	if routeKnown && r.Status != 0 {
		w.Routes[ri].Numbers.responseSurprise(r, v, &w.statusMix)
	}
}

// RespondWith completes a request-phase verdict (scored with no response)
// with the response's status and size, as the filter's response phase does:
// the result equals scoring the request with its response at once, without
// judging its parameters again.
func (w *Workload) RespondWith(r *Request, v Verdict) Verdict {
	var buf [MaxRouteBytes + 8]byte
	tmpl := AppendTemplate(buf[:0], r.Path)
	if ri, ok := w.routeIndex.get(hashBytes(hashString(hashSeed, r.Method), tmpl)); ok {
		w.Routes[ri].Numbers.responseSurprise(r, &v, &w.statusMix)
	}
	if r.Status != 0 && w.RespCenter > 0 {
		v.Score = calibrate(v.Surprise, w.RespBase, w.RespCenter)
	} else {
		v.Score = calibrate(v.Surprise, w.CalBase, w.CalCenter)
	}
	return v
}

// paramSurprise adds the most surprising value, and the names the route
// never had, to v.
func (w *Workload) paramSurprise(r *Request, s *paramScratch, v *Verdict, ri uint32, routeKnown bool) {
	if len(w.Params) == 0 {
		return
	}
	s.extract(r)
	var worst float64
	var worstCode ReasonCode
	var newParams float64
	for i := 0; i < s.n; i++ {
		p := &s.params[i]
		var pm *ParamModel
		if p.header || routeKnown {
			// The key of the parameter's model (see modelKey), computed
			// here rather than in a method: compiled to WebAssembly, a
			// call per parameter costs.
			var key uint64
			if p.header {
				key = hashBytes(headerKeySeed, p.name)
			} else {
				key = paramKey(ri, p.name)
			}
			if idx, ok := w.paramIndex.get(key); ok {
				pm = &w.Params[idx]
			}
		}
		if pm == nil {
			switch {
			case p.header:
				newParams = math.Max(newParams, -math.Log(w.pNewHeader))
			case routeKnown:
				rt := &w.Routes[ri]
				pn := (float64(rt.ParamSingletons) + 1) / (float64(rt.ParamObs) + 2)
				newParams = math.Max(newParams, -math.Log(pn))
			}
			if w.anyParam < 0 {
				continue
			}
			pm = &w.Params[w.anyParam]
		}
		// Most values of mesh traffic are ones their enumerable parameter
		// took in training (user-agent, accept): they are told apart here
		// (ParamModel.knownValue, written out so that the table lookup is
		// inlined), without the call to valueSurprise, which would answer 0.
		if len(pm.Enum) > 0 {
			if _, ok := pm.enumSet.get(hashBytes(hashSeed, p.value)); ok {
				s.known |= 1 << uint(i)
				continue
			}
		}
		sur, code := pm.valueSurprise(p.value)
		if code == ReasonNone {
			s.known |= 1 << uint(i)
		}
		if p.header {
			sur *= headerWeight
		}
		if sur > worst {
			worst, worstCode = sur, code
		}
	}
	if newParams > 0 {
		v.add(ReasonNewParam, newParams)
	}
	// Every value costs some surprise; only one beyond what a typical
	// request of this workload carries in total is worth naming as a reason.
	v.Surprise += worst
	if worst > w.CalBase {
		v.addReason(worstCode, worst)
	}
}

// headerWeight is what a header value's surprise counts for against a
// parameter value's. A workload's header models are learned across all its
// callers, whose software (browsers, SDKs, proxies) writes user agents,
// accept lists and cookies each its own way, so a header value unlike
// training is weaker evidence than a parameter value unlike its route's.
// The content model still reads header values in full.
const headerWeight = 0.5

// add records a component's surprise in the verdict.
func (v *Verdict) add(code ReasonCode, surprise float64) {
	v.Surprise += surprise
	v.addReason(code, surprise)
}

func paramKey(route uint32, name []byte) uint64 {
	return hashBytes(uint64(route)*hashMix^hashSeed, name)
}

// index builds the lookup tables of a workload from its slices.
func (w *Workload) index() {
	w.sourceIndex = newTable(len(w.Sources))
	for i, s := range w.Sources {
		w.sourceIndex.put(hashString(hashSeed, s), uint32(i))
	}
	w.routeIndex = newTable(len(w.Routes))
	for i, r := range w.Routes {
		w.routeIndex.put(hashString(hashString(hashSeed, r.Method), r.Template), uint32(i))
	}
	w.edgeSet = newTable(len(w.Edges))
	srcCount := make([]uint32, len(w.Sources))
	var n, edgeOnce float64
	for _, e := range w.Edges {
		w.edgeSet.put(edgeKey(e.Source, e.Route), 1)
		srcCount[e.Source] += e.Count
		n += float64(e.Count)
		if e.Count == 1 {
			edgeOnce++
		}
	}
	var srcOnce, routeOnce float64
	for _, c := range srcCount {
		if c == 1 {
			srcOnce++
		}
	}
	w.statusMix = [5]uint32{}
	for _, r := range w.Routes {
		if r.Count == 1 {
			routeOnce++
		}
		for i, c := range r.Numbers.Status {
			w.statusMix[i] += c
		}
	}
	w.requests = n
	w.pNewCaller = (srcOnce + 1) / (n + 2)
	w.pNewRoute = (routeOnce + 1) / (n + 2)
	w.pNewEdge = (edgeOnce + 1) / (n + 2)
	w.paramIndex = newTable(len(w.Params))
	w.anyParam = -1
	var prior *[nTrans]float64
	for i := range w.Params {
		if p := &w.Params[i]; p.Route == AnyRoute && p.Name == AnyParam {
			w.anyParam = i
			p.index(nil)
			probs := p.transitionProbs(nil)
			prior = &probs
		}
	}
	var headerObs, headerOnce float64
	for i := range w.Params {
		p := &w.Params[i]
		if i == w.anyParam {
			continue
		}
		p.index(prior)
		w.paramIndex.put(p.modelKey(), uint32(i))
		if p.Route == AnyRoute {
			headerObs += float64(p.Count)
			if p.Count == 1 {
				headerOnce++
			}
		}
	}
	w.pNewHeader = (headerOnce + 1) / (headerObs + 2)
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
	for i := range w.Params {
		if w.Params[i].Route != AnyRoute {
			w.Params[i].Route = newRoute[w.Params[i].Route]
		}
	}
	sort.Slice(w.Params, func(a, b int) bool { return paramLess(&w.Params[a], &w.Params[b]) })
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

// The hash behind every lookup and every stored value hash: eight bytes at a
// time, then a splitmix64 finalizer. It is allocation-free, identical on
// every platform (models store its output, so it must never change without a
// codec version bump), and several times faster than a byte-wise hash,
// which matters most compiled to WebAssembly.
// hashSeed starts a hash and hashMix spreads a route index into a seed (the
// FNV-1a constants, kept so stored hashes stay the same).
const (
	hashSeed = 14695981039346656037
	hashMix  = 1099511628211
	hashK1   = 0x9E3779B97F4A7C15
	hashK2   = 0xC2B2AE3D27D4EB4F
)

func hashString(h uint64, s string) uint64 {
	return hashBytes(h, stringBytes(s))
}

func hashBytes(h uint64, b []byte) uint64 {
	n := uint64(len(b))
	for len(b) >= 8 {
		h = bits.RotateLeft64(h^binary.LittleEndian.Uint64(b)*hashK1, 31) * hashK2
		b = b[8:]
	}
	var tail uint64
	for i := len(b) - 1; i >= 0; i-- {
		tail = tail<<8 | uint64(b[i])
	}
	// The length keeps ("ab","c") and ("a","bc") apart when chained.
	h = bits.RotateLeft64(h^(tail^n<<56)*hashK1, 31) * hashK2
	h ^= h >> 30
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 27
	h *= 0x94D049BB133111EB
	return h ^ h>>31
}
