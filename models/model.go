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

	"github.com/meshward/meshward/internal/wordeq"
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
	// valueKey is the key SetValueKey gave.
	valueKey ValueKey
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
	// Tails turn each calibrated part's surprise into how rare normal
	// traffic makes it (see Tail); the structural parts' are unused.
	Tails [NParts]Tail
	// CalBase and CalCenter map the request's combined surprise (see
	// combine) to its score: CalBase is the median combined surprise of
	// held-back normal requests, CalCenter the combined surprise of a
	// request as rare as TargetFPR (-ln TargetFPR). A request's score is
	// 1 - 2^(-max(0, surprise-CalBase)/(CalCenter-CalBase)): 0 for a typical
	// request, 0.5 at CalCenter, towards 1 beyond.
	CalBase, CalCenter float64
	// RespBase and RespCenter do the same once the response is known (its
	// status and size count too); zero when training saw no responses.
	RespBase, RespCenter float64
	// ValueKeyID is the ID of the value key the digests its parameters
	// enumerate were made with (ParamModel.HashEnum; ValueKey.ID), 0 when
	// none do.
	ValueKeyID uint32

	// digestKey is the value key scoring digests values with: the
	// filter's (SetValueKey), when its ID is ValueKeyID. nil: values of a
	// HashEnum parameter are not looked up, unless a record's marks give
	// their digests.
	digestKey *ValueKey

	sourceIndex table
	routeIndex  table
	edgeSet     table
	paramIndex  table
	anyParam    int // index of the AnyRoute/AnyParam model, or -1
	requests    float64
	// Good-Turing estimates of meeting something new, from the number of
	// callers, routes, edges and header names seen exactly once.
	pNewCaller, pNewRoute, pNewEdge, pNewHeader float64
	// derived says how new routes that extend a known one are priced
	// (see route.go).
	derived derivedRoutes
	// statusMix counts the workload's responses by status class.
	statusMix [5]uint32
	// content is the model's content model (shared by every section), or nil.
	content *ContentModel
	// novelCost prices a new character trigram in the path, in names and
	// in values of parameters that price none of their own.
	novelCost float64
	// contentNamedAt is the content part's surprise from which it names
	// itself as a reason (see judge).
	contentNamedAt float64
}

// attachContent gives the workload the model's content model, and prices
// new trigrams per parameter: by how often the parameter's own training
// values brought trigrams no other value had (Good-Turing), so that a
// free-text field tolerates new character sequences and an identifier or
// enumerated field does not; a parameter with too few trigrams to say
// takes the model's price.
func (w *Workload) attachContent(c *ContentModel) {
	w.content = c
	w.novelCost = 0
	if c != nil {
		w.novelCost = c.NovelCost
	}
	shaped := c != nil && c.Shaped
	var grams *[gramWords]uint64
	if c != nil && len(c.Grams) == gramWords {
		grams = (*[gramWords]uint64)(c.Grams)
	}
	for i := range w.Params {
		pm := &w.Params[i]
		pm.priceNovelty(w.novelCost)
		pm.shaped = shaped
		pm.name = nameDigest{}
		if c != nil && !pm.header() {
			pm.name = digestName(view(pm.Name), grams, w.novelCost)
		}
	}
	w.contentNamedAt = w.Tails[PartContent].inverse(reasonTail)
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

	// newName is the surprise of a parameter name the route never had
	// (see Workload.index).
	newName float64
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
	// ReasonRouteSuffix: an unknown route that is a known one with
	// something appended (a backup-file or path-suffix probe: .bak, ~,
	// /.git/config).
	ReasonRouteSuffix
	// ReasonBodyBeyond: a request body larger than any the route sent.
	ReasonBodyBeyond
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
	ReasonRouteSuffix:        "route_suffix",
	ReasonBodyBeyond:         "body_beyond_route",
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
	case ReasonNewCaller, ReasonNewRoute, ReasonNewEdge, ReasonUnknownDestination, ReasonRouteSuffix:
		return "graph"
	case ReasonNewParam, ReasonValueShape, ReasonValueLength, ReasonKeywords, ReasonNewValue:
		return "params"
	case ReasonRequestSize, ReasonStatus, ReasonResponseSize, ReasonBodyBeyond:
		return "numbers"
	}
	if c >= ReasonContent && c <= ReasonContentNovel {
		return "content"
	}
	return "none"
}

// Reason is one part's contribution to a score: its tail surprise in nats
// (-log of the share of normal requests at least as surprising).
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
	// Surprise is -ln of the request's p-value: its parts combined (see
	// combine).
	Surprise float64
	// Scored is false when the model could not judge the request (no
	// section for its destination and no fallback); Score is then 0.
	Scored bool
	// NewCaller says the section never learned the request's source: the
	// request is on a new edge (whether or not the section prices new
	// callers), which the filter ships whatever its sample.
	NewCaller bool
	Reasons   [MaxReasons]Reason
	NReason   int
	// Parts holds each part's surprise before calibration (nats), and
	// Codes the reason that names it.
	Parts [NParts]float64
	Codes [NParts]ReasonCode
	// asKnown and asKnownCode are the content part with the path taken as
	// a known route's (0: none), set (hasAsKnown) when the request came on
	// a new route whose path is words alone: what Graduate judges when
	// the route's novelty is set aside.
	asKnown     float64
	asKnownCode ReasonCode
	hasAsKnown  bool
}

// Clear readies a verdict for reuse (a pooled stream's): every field as a
// new verdict has it but for its reasons, parts and codes, which scoring
// overwrites before it reads them (in wasm, zeroing those arrays is a
// memory.fill).
func (v *Verdict) Clear() {
	v.Score, v.Surprise, v.Scored, v.NewCaller, v.NReason = 0, 0, false, false, 0
	v.asKnown, v.asKnownCode, v.hasAsKnown = 0, ReasonNone, false
}

// part records a part's surprise, keeping the largest and its reason.
func (v *Verdict) part(p Part, code ReasonCode, s float64) {
	if s > v.Parts[p] {
		v.Parts[p], v.Codes[p] = s, code
	}
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
type Scratch struct {
	// BodyLimit is how much of a request body is read (0:
	// DefaultBodyLimit); what lies beyond counts in the request's size
	// only. The filter sets it from its max_body_bytes.
	BodyLimit int

	params paramScratch
	// fed counts the body bytes fed to the request being judged; cut says
	// the body goes on past them (Feed met the limit, or Truncate).
	fed int
	cut bool
}

// Truncate says the body of the request being judged goes on past what
// was fed: the filter judges at the body limit before the rest arrives.
// The value the body was cut in is then not judged as whole.
func (s *Scratch) Truncate() { s.cut = true }

// bodyLimit returns the body limit in force.
func (s *Scratch) bodyLimit() int {
	if s.BodyLimit <= 0 {
		return DefaultBodyLimit
	}
	return min(s.BodyLimit, MaxBodyLimit)
}

var scratchPool = sync.Pool{New: func() any { return new(Scratch) }}

// Score judges one request against this section, whatever its Destination
// says. It borrows a Scratch from a pool; ScoreWith takes the caller's.
func (w *Workload) Score(r *Request) Verdict {
	s := scratchPool.Get().(*Scratch)
	v := w.ScoreWith(r, s)
	scratchPool.Put(s)
	return v
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
	// measure and Begin written out: the filter scores every request
	// without a body here, and a call costs in wasm.
	v.reset()
	s.fed, s.cut = 0, false
	w.begin(r, &s.params, v)
	if len(r.Body) > 0 {
		w.Feed(r.Body, s)
	}
	w.finish(r, s, v)
	w.judge(v, r.Status != 0)
}

// measure reads a request with its body whole (up to the body limit) into
// v's parts.
func (w *Workload) measure(r *Request, s *Scratch, v *Verdict) {
	w.Begin(r, s, v)
	if len(r.Body) > 0 {
		w.Feed(r.Body, s)
	}
	w.finish(r, s, v)
}

// Begin starts judging a request whose body follows in chunks (Feed; End
// judges it): the filter reads a body as the proxy passes it, never holding
// it. r needs no body; its headers must stay as they are until End.
func (w *Workload) Begin(r *Request, s *Scratch, v *Verdict) {
	v.reset()
	s.fed, s.cut = 0, false
	w.begin(r, &s.params, v)
}

// Feed reads the next chunk of the request's body, as far as the body
// limit (Scratch.BodyLimit) reaches, and reports how many of its bytes it
// read.
func (w *Workload) Feed(chunk []byte, s *Scratch) int {
	n := min(len(chunk), s.bodyLimit()-s.fed)
	if n < len(chunk) {
		s.cut = true
	}
	if n <= 0 {
		return 0
	}
	s.fed += n
	s.params.feed(chunk[:n])
	return n
}

// End reads the end of the body and judges the request. Its size is
// r.RequestBytes when set (bytes beyond the limit count there), else what
// was fed.
func (w *Workload) End(r *Request, s *Scratch, v *Verdict) {
	w.finish(r, s, v)
	w.judge(v, r.Status != 0)
}

// reset clears a verdict's score, surprises and reasons, part by part: in
// wasm, zeroing the arrays at once is a memory.fill.
func (v *Verdict) reset() {
	v.Score, v.Surprise, v.NReason, v.hasAsKnown = 0, 0, 0, false
	for p := range v.Parts {
		v.Parts[p] = 0
	}
}

// reasonTail is the tail surprise (-ln 0.01) from which a calibrated part
// names itself as a reason: rarer than 1 % of normal requests. Structural
// parts name themselves whenever they speak.
const reasonTail = 4.605

// judge turns the parts' surprises into tail surprises, combines them into
// the request's surprise and score, and names the reasons; response says
// the response is known and its parts count.
func (w *Workload) judge(v *Verdict, response bool) {
	last, base, center := requestParts, w.CalBase, w.CalCenter
	if response && w.RespCenter > 0 {
		last, base, center = NParts, w.RespBase, w.RespCenter
	}
	v.NReason = 0
	raw := v.Parts[PartCaller] + v.Parts[PartRoute] + v.Parts[PartEdge] + v.Parts[PartNames]
	structural := 0.0
	if raw > 0 {
		structural = minf(raw, w.Tails[partStructure].surprise(raw))
		// Each structural part is named, with its share of the sum.
		for p := PartCaller; p <= PartNames; p++ {
			if s := v.Parts[p]; s > 0 {
				v.addReason(v.Codes[p], s*structural/raw)
			}
		}
	}
	// The calibrated parts' tail surprises, as float32s: eight of them fit
	// the 32 bytes a local array may take without a memory.fill in wasm.
	var tails [8]float32
	for p := PartValues; p < last; p++ {
		s := v.Parts[p]
		if s <= 0 {
			continue
		}
		t := w.Tails[p].surprise(s)
		tails[p-PartValues] = float32(t)
		if t >= reasonTail {
			v.addReason(v.Codes[p], t)
		}
	}
	v.Surprise = combine(structural, &tails, int(last-PartValues))
	v.Score = calibrate(v.Surprise, base, center)
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
		g *= expFast(d)
	}
	return 1 - expFast(-g*math.Ln2)
}

// scoreFloor bounds (as -log2 of 1 minus it) the score of a request at or
// below the typical surprise: about 7e-7.
const scoreFloor = 1e-6

// begin reads what a request says before its body: its caller, route and
// edge, its query and headers; the body follows (paramScratch.feed).
func (w *Workload) begin(r *Request, s *paramScratch, v *Verdict) {
	// The template is built in the scratch: a zeroed local array would be a
	// memory.fill per request in wasm.
	tmpl, plain := appendTemplate(s.route[:0], r.Path)

	// Caller graph: meeting a caller, route or edge never seen, weighed by
	// how often training met new ones (Good-Turing).
	si, srcKnown := w.sourceOf(r.Source)
	ri, routeKnown := w.routeOf(r.Method, tmpl)
	v.NewCaller = !srcKnown
	if !srcKnown && len(w.Sources) > 0 {
		v.part(PartCaller, ReasonNewCaller, -math.Log(w.pNewCaller))
	}
	if !routeKnown && len(w.Routes) > 0 {
		sur, code := -math.Log(w.pNewRoute), ReasonNewRoute
		if d := w.derived.surprise(tmpl); d > 0 {
			sur, code = sur+d, ReasonRouteSuffix
		}
		v.part(PartRoute, code, sur)
	}
	if srcKnown && routeKnown {
		if _, ok := w.edgeSet.get(edgeKey(si, ri)); !ok {
			v.part(PartEdge, ReasonNewEdge, -math.Log(w.pNewEdge))
		}
	}
	sc := &s.scorer
	sc.w, sc.ri, sc.routeKnown = w, ri, routeKnown
	sc.values, sc.valuesCode, sc.names = 0, ReasonNone, 0
	switch {
	case s.training != nil:
		sc.content, sc.mask, sc.shaped = true, s.training.mask, s.training.shaped
		s.contentStart(r, sc.mask, nil, false, false, 0)
	case w.content != nil && w.content.checked:
		sc.content, sc.mask, sc.shaped = true, w.content.Mask, w.content.Shaped
		// A new route's path made of words alone is read apart, so that
		// Graduate can judge the request as if the route were known, as
		// the request passed: a body is not read twice.
		known := (routeKnown || s.pathKnown) && plain
		apart := !known && !routeKnown && len(w.Routes) > 0 && plain && wordsOnly(r.Path)
		s.contentStart(r, sc.mask, w.content.Grams, known, apart, w.novelCost)
	default:
		sc.content = false
	}
	s.begin(r, sc)
}

// finish reads the end of the body and what is known of the request as a
// whole: its size, its content, its response.
func (w *Workload) finish(r *Request, s *Scratch, v *Verdict) {
	p := &s.params
	p.finish(s.cut)
	sc := &p.scorer
	if sc.names > 0 {
		v.part(PartNames, ReasonNewParam, sc.names)
	}
	v.part(PartValues, sc.valuesCode, sc.values)
	// The numeric signals are asked for only when there is a number to
	// judge (a request without a body, a response not yet known, add
	// nothing): compiled to WebAssembly, the calls cost even when they do
	// nothing.
	if size := max(r.RequestBytes, int64(len(r.Body)), int64(s.fed)); sc.routeKnown && size > 0 {
		w.Routes[sc.ri].Numbers.requestSurprise(size, v)
	}
	switch {
	case p.training != nil:
		x := &p.training.x
		*x = ContentVector{}
		p.contentVectorEnd(x, sc.mask)
		for f := range x {
			x[f] &= -uint8(sc.mask >> uint(f) & 1)
		}
	case sc.content:
		if p.pathApart {
			w.contentAsKnown(p, v)
		}
		if sur, code := w.contentPart(p); sur > 0 {
			v.part(PartContent, code, sur)
		}
	}
	// Response signals come last, so that adding them to a request-phase
	// verdict (RespondWith) sums in the same order as scoring at once.
	if sc.routeKnown && r.Status != 0 {
		w.Routes[sc.ri].Numbers.responseSurprise(r, v, &w.statusMix)
	}
	v.Scored = true
}

// scorer is the batch sink of scoring: it judges each batch's parameters
// against the section (values, names) and reads them into the content
// model.
type scorer struct {
	w                           *Workload
	ri                          uint32
	mask                        uint32
	routeKnown, content, shaped bool
	// The values and names parts so far (finish records them in the
	// verdict, which the scratch must not point to: a verdict returned by
	// value would move to the heap).
	values     float64
	valuesCode ReasonCode
	names      float64
}

func (sc *scorer) batch(s *paramScratch, final bool) {
	w := sc.w
	if len(w.Params) > 0 {
		w.paramSurprise(s, sc)
	} else {
		for i := 0; i < s.n; i++ {
			s.params[i].novelCost = w.novelCost
		}
	}
	if sc.content {
		s.contentBatch(sc.mask, sc.shaped, final)
	}
}

// RespondWith completes a request-phase verdict (scored with no response)
// with the response's status and size, as the filter's response phase does:
// the result equals scoring the request with its response at once, without
// judging its parameters again.
func (w *Workload) RespondWith(r *Request, v Verdict) Verdict {
	var buf [MaxRouteBytes + 8]byte
	tmpl := AppendTemplate(buf[:0], r.Path)
	if ri, ok := w.routeOf(r.Method, tmpl); ok {
		w.Routes[ri].Numbers.responseSurprise(r, &v, &w.statusMix)
	}
	w.judge(&v, r.Status != 0)
	return v
}

// paramSurprise records the value least like its parameter's (against
// that parameter's own normal tail), and the names the route never had, in
// v; it leaves in s each parameter's price of a new character trigram, for
// the content model.
func (w *Workload) paramSurprise(s *paramScratch, sc *scorer) {
	ri, routeKnown := sc.ri, sc.routeKnown
	var worst float64
	var worstCode ReasonCode
	var newParams float64
	for i := 0; i < s.n; i++ {
		p := &s.params[i]
		pm := w.paramOf(p, ri, routeKnown)
		learned := pm != nil
		if !learned {
			switch {
			case p.header:
				newParams = maxf(newParams, -math.Log(w.pNewHeader))
			case routeKnown:
				newParams = maxf(newParams, w.Routes[ri].newName)
			}
			if w.anyParam < 0 {
				p.novelCost = w.novelCost
				continue
			}
			pm = &w.Params[w.anyParam]
		}
		p.novelCost = pm.novelCost
		if learned && pm.name.ok && !p.header && !p.cont {
			// The name is the one the model learned (paramOf compared
			// them): what the content model reads of it is known.
			p.digest = &pm.name
		}
		// Most values of mesh traffic are ones their enumerable parameter
		// took in training (user-agent, accept): they are told apart here
		// (ParamModel.knownValue, written out so that the table lookup is
		// inlined), without the call to valueSurprise, which would answer 0.
		whole := p.last && !p.cont
		if len(pm.Enum) > 0 && whole && !pm.ShapeEnum {
			known := false
			if pm.HashEnum {
				// A value without a digest to look up is judged by its
				// shape alone, not as a new value.
				known, whole = w.digestKnown(pm, p)
			} else if k, ok := pm.enumSet.get(hashBytes(hashSeed, p.value)); ok && same(pm.Values[k], p.value) {
				known = true
			}
			if known {
				s.known |= 1 << uint(i)
				if s.collect != nil {
					// A value the parameter took is part of its tail.
					s.collect(pm, 0)
				}
				continue
			}
		}
		raw, code := pm.valueSurprise(p.value, p.full, whole, pm.keywordsOf(p))
		if code == ReasonNone {
			s.known |= 1 << uint(i)
		}
		if s.collect != nil {
			s.collect(pm, raw)
		}
		sur := pm.tail(raw)
		if p.header {
			sur *= headerWeight
		}

		if sur > worst {
			worst, worstCode = sur, code
		}
	}
	sc.names = maxf(sc.names, newParams)
	if worst > sc.values {
		sc.values, sc.valuesCode = worst, worstCode
	}
}

// digestKnown looks a whole value of a parameter that enumerates digests
// (ParamModel.HashEnum) up: known says its digest is one of them; decided
// says there was a digest to look up, or the value is too long to be one
// of the short values learned. A short value has a digest when a record's
// mark gave it under the key the workload's digests were made with, or the
// filter's value key is that key (SetValueKey).
func (w *Workload) digestKnown(pm *ParamModel, p *param) (known, decided bool) {
	var d uint64
	switch {
	case p.hasVD && p.vk == w.ValueKeyID:
		d = p.vd
	case len(p.value) > MaxDigestedValue:
		return false, true
	case w.digestKey != nil:
		d = w.digestKey.Digest(p.value)
	default:
		return false, false
	}
	_, known = pm.enumSet.get(d)
	return known, true
}

// SetValueKey gives the model the value key of the filter that scores
// with it (see ValueKey): a workload whose digests were made with it looks
// the short values of its HashEnum parameters up by their digests; one
// made with another key (or none given) judges them by their shapes. It
// reports how many workloads enumerate digests under another key.
func (m *Model) SetValueKey(k ValueKey) (mismatched int) {
	m.valueKey = k
	for _, w := range m.Workloads {
		w.digestKey = nil
		switch {
		case w.ValueKeyID == 0:
		case k.Set() && k.ID() == w.ValueKeyID:
			key := k
			w.digestKey = &key
		default:
			mismatched++
		}
	}
	return mismatched
}

// ValueKey is the key SetValueKey gave (unset when none was): what a filter
// scoring with the model is configured with.
func (m *Model) ValueKey() ValueKey { return m.valueKey }

// headerWeight is what a header value's surprise counts for against a
// parameter value's. A workload's header models are learned across all its
// callers, whose software (browsers, SDKs, proxies) writes user agents,
// accept lists and cookies each its own way, so a header value unlike
// training is weaker evidence than a parameter value unlike its route's.
// The content model still reads header values in full.
const headerWeight = 0.5

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
	w.derived.build(w.Routes)
	// A new parameter name on a route: Good-Turing over the route's name
	// occurrences, with the workload's own rate as the prior, worth one
	// novelty in as many occurrences as the workload needed for one. A
	// route whose names never changed costs what the whole workload's
	// closedness says, not merely what its own, perhaps few, requests say.
	var obs, once float64
	for _, r := range w.Routes {
		obs += float64(r.ParamObs)
		once += float64(r.ParamSingletons)
	}
	namePrior := (obs + 2) / (once + 1)
	for i := range w.Routes {
		r := &w.Routes[i]
		r.newName = -math.Log((float64(r.ParamSingletons) + 1) / (float64(r.ParamObs) + namePrior))
	}
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
	// An unseen value of an enumerable parameter: likewise, with the rate
	// at which the workload's enumerable parameters met new values.
	var enumObs, enumOnce float64
	for i := range w.Params {
		if p := &w.Params[i]; len(p.Enum) > 0 {
			enumObs += float64(p.Count)
			enumOnce += float64(p.Singletons)
		}
	}
	enumPrior := (enumObs + 2) / (enumOnce + 1)
	var headerObs, headerOnce float64
	for i := range w.Params {
		p := &w.Params[i]
		if i == w.anyParam {
			continue
		}
		p.index(prior)
		p.newValue = -math.Log((float64(p.Singletons) + 1) / (float64(p.Count) + enumPrior))
		p.newLength, p.nearLengths = 0, p.Lengths|p.Lengths<<1|p.Lengths>>1
		if bits.OnesCount64(p.Lengths) <= maxClosedLengths {
			p.newLength = -math.Log((float64(p.LenSingletons) + 1) / (float64(p.Count) + 2))
		}
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

// The section's tables are keyed by 64-bit hashes, which a chosen input
// can be made to match (every step of hashBytes inverts): what a key finds
// is compared with what the request says before it counts as known, so a
// crafted caller, path or name is never taken for a learned one
// (TestCollidingKeysAreNotKnown).

// sourceOf returns the index of a source the section learned.
func (w *Workload) sourceOf(source string) (uint32, bool) {
	si, ok := w.sourceIndex.get(hashString(hashSeed, source))
	return si, ok && wordeq.Equal(w.Sources[si], source)
}

// routeOf returns the index of a route (method and template) the section
// learned.
func (w *Workload) routeOf(method string, tmpl []byte) (uint32, bool) {
	ri, ok := w.routeIndex.get(hashBytes(methodSeed(method), tmpl))
	return ri, ok && same(w.Routes[ri].Template, tmpl) && wordeq.Equal(w.Routes[ri].Method, method)
}

// paramOf returns the model of a request's parameter, or nil: its header's
// (any route), or its route's when the route is known.
func (w *Workload) paramOf(p *param, ri uint32, routeKnown bool) *ParamModel {
	var pm *ParamModel
	if p.header {
		if idx, ok := w.paramIndex.get(hashBytes(headerKeySeed, p.name)); ok {
			pm = &w.Params[idx]
			if len(pm.Name) != len(headerPrefix)+len(p.name) || !same(pm.Name[len(headerPrefix):], p.name) {
				pm = nil
			}
		}
	} else if routeKnown {
		if idx, ok := w.paramIndex.get(paramKey(ri, p.name)); ok {
			pm = &w.Params[idx]
			if pm.Route != ri || !same(pm.Name, p.name) {
				pm = nil
			}
		}
	}
	return pm
}

// methodSeed returns hashString(hashSeed, method), the seed of a route's
// key: GET's and POST's are computed once (a hash is a call in wasm, and
// most requests are one or the other).
func methodSeed(method string) uint64 {
	switch method {
	case "GET":
		return getSeed
	case "POST":
		return postSeed
	}
	return hashString(hashSeed, method)
}

var getSeed, postSeed = hashString(hashSeed, "GET"), hashString(hashSeed, "POST")

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
	return mixHash(h, tail, n)
}

// mixHash ends hashBytes: the last bytes (tail), the length, a finaliser.
func mixHash(h, tail, n uint64) uint64 {
	// The length keeps ("ab","c") and ("a","bc") apart when chained.
	h = bits.RotateLeft64(h^(tail^n<<56)*hashK1, 31) * hashK2
	h ^= h >> 30
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 27
	h *= 0x94D049BB133111EB
	return h ^ h>>31
}
