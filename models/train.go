package models

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// TrainConfig is everything training takes besides the requests.
type TrainConfig struct {
	// Seed makes training deterministic: same seed, same requests, same bytes.
	Seed uint64
	// TargetFPR is the false-positive rate the threshold is calibrated to.
	TargetFPR float64
	// HoldBack is the share of requests kept out of training to calibrate
	// the score on (chosen by a seeded hash of each request's content).
	HoldBack float64
	// MaxHoldBack bounds how many held-back requests are kept.
	MaxHoldBack int
	// MaxPerSource caps what one source may contribute to one destination,
	// so a single (possibly compromised) caller cannot drown the rest.
	MaxPerSource int
	// MaxSourceLen, MaxRoutesPerWorkload, MaxSourcesPerWorkload and
	// MaxParamsPerRoute bound a model's size.
	MaxSourceLen          int
	MaxRoutesPerWorkload  int
	MaxSourcesPerWorkload int
	MaxParamsPerRoute     int
	// Current, when set, is the model in force: requests it flags are not
	// learned as normal, so an attack in progress cannot teach itself in.
	Current *Model
	// ShapedValues says the requests carry parameter values as their
	// character-class shapes (as the filter ships them), not the values:
	// no enumeration is learned then, since shapes of distinct values
	// coincide and every real value would look new.
	ShapedValues bool
	// Now stamps the model; zero means time.Now.
	Now time.Time
}

// DefaultTrainConfig returns the defaults, in one place.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{
		Seed:                  1,
		TargetFPR:             0.001,
		HoldBack:              0.1,
		MaxHoldBack:           50_000,
		MaxPerSource:          100_000,
		MaxSourceLen:          256,
		MaxRoutesPerWorkload:  2000,
		MaxSourcesPerWorkload: 2000,
		MaxParamsPerRoute:     64,
	}
}

// Validate reports every problem with the configuration.
func (c TrainConfig) Validate() error {
	var errs []error
	if !(c.TargetFPR > 0 && c.TargetFPR < 1) {
		errs = append(errs, fmt.Errorf("target_fpr: %v is not in (0,1)", c.TargetFPR))
	}
	if !(c.HoldBack > 0 && c.HoldBack < 0.5) {
		errs = append(errs, fmt.Errorf("hold_back: %v is not in (0,0.5)", c.HoldBack))
	}
	if c.MaxHoldBack <= 0 {
		errs = append(errs, fmt.Errorf("max_hold_back: %d must be positive", c.MaxHoldBack))
	}
	if c.MaxPerSource <= 0 {
		errs = append(errs, fmt.Errorf("max_per_source: %d must be positive", c.MaxPerSource))
	}
	if c.MaxSourceLen <= 0 || c.MaxSourceLen > maxStringLen {
		errs = append(errs, fmt.Errorf("max_source_len: %d must be in [1,%d]", c.MaxSourceLen, maxStringLen))
	}
	if c.MaxRoutesPerWorkload <= 0 || c.MaxSourcesPerWorkload <= 0 || c.MaxParamsPerRoute <= 0 {
		errs = append(errs, errors.New("max_routes_per_workload, max_sources_per_workload and max_params_per_route must be positive"))
	}
	return errors.Join(errs...)
}

// Trainer accumulates normal requests and builds a Model from them.
type Trainer struct {
	cfg       TrainConfig
	workloads map[string]*workloadStats
	heldBack  []Request
	seen      map[uint64]uint32 // occurrences per request content (heldOut)
	samples   uint64
	skipped   uint64
	flagged   uint64
	scratch   paramScratch
	// lastHash is heldOut's hash of the request last observed: it orders
	// the content model's sample (see sampleContent).
	lastHash uint64
	// contentSample holds the learned requests with the smallest hashes:
	// a uniform sample that does not depend on the order requests came in.
	contentSample []sampledRequest
	// grams counts the trigrams of the requests learned.
	grams *gramCounts
	// stats lists every parameter's statistics by id; owners holds the id
	// of each parameter of the batch being learned, in its destination's
	// section (noOwner when not learned), and ownStats those statistics.
	stats    []*paramStats
	credited bool
	owners   [maxParams]int32
	ownStats [maxParams]*paramStats
	learner  learner
}

type sampledRequest struct {
	hash uint64
	req  Request
}

type workloadStats struct {
	perSource map[string]int
	routes    map[routeKey]*routeStats
	edges     map[edgeName]uint32
	params    map[paramName]*paramStats
	anyParam  *paramStats
}

type routeStats struct {
	count   uint32
	names   map[string]uint32
	numbers Numbers
}

type routeKey struct{ method, template string }

// anyRouteKey keys the workload-wide parameter models (headers).
var anyRouteKey = routeKey{method: "*", template: "*"}

type edgeName struct {
	source string
	route  routeKey
}

type paramName struct {
	route routeKey
	name  string
}

// NewTrainer returns a trainer, or the configuration's problems.
func NewTrainer(cfg TrainConfig) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Trainer{cfg: cfg, workloads: map[string]*workloadStats{}}, nil
}

// Observe learns one normal request, for its destination and for the global
// fallback, or holds it back for calibration. It returns false when the
// request was not learned (its source is over its cap, the current model
// flags it, or it was held back).
func (t *Trainer) Observe(r *Request) bool {
	if t.cfg.Current != nil {
		if v := t.cfg.Current.Score(r); v.Scored && v.Score > t.cfg.Current.Meta.Threshold {
			t.flagged++
			return false
		}
	}
	if t.heldOut(r) {
		if len(t.heldBack) < t.cfg.MaxHoldBack {
			t.heldBack = append(t.heldBack, cloneRequest(r))
			return false
		}
	}
	src := r.Source
	if len(src) > t.cfg.MaxSourceLen {
		src = src[:t.cfg.MaxSourceLen]
	}
	rk := routeKey{method: r.Method, template: Template(r.Path)}
	l := &t.learner
	l.t, l.rk = t, rk
	l.dst, l.dstRoute = t.observe(r, r.Destination, src, rk)
	l.global, l.globalRoute = nil, nil
	if r.Destination != GlobalWorkload {
		l.global, l.globalRoute = t.observe(r, GlobalWorkload, src, rk)
	}
	ok := l.dst != nil
	if ok && t.grams == nil && !t.cfg.ShapedValues {
		t.grams = newGramCounts()
	}
	l.grams = ok && t.grams != nil
	if l.grams {
		t.grams.add(view(limitPath(r.Path)), noOwner)
	}
	if l.dst != nil || l.global != nil {
		// The parameters, a batch at a time (learner.batch), the body as
		// far as scoring reads it.
		t.scratch.begin(r, l)
		t.scratch.feed(r.Body[:min(len(r.Body), DefaultBodyLimit)])
		t.scratch.finish(len(r.Body) > DefaultBodyLimit)
	}
	if ok {
		t.samples++
		t.sampleContent(r)
	} else {
		t.skipped++
	}
	return ok
}

// learner is the batch sink of training: it learns each batch's parameters
// for the request's destination and for the global section (where the
// request was learned: dst or global nil where not), and counts their
// trigrams.
type learner struct {
	t                     *Trainer
	rk                    routeKey
	dst, global           *workloadStats
	dstRoute, globalRoute *routeStats
	grams                 bool
}

func (l *learner) batch(s *paramScratch, _ bool) {
	t := l.t
	for i := range t.owners[:s.n] {
		t.owners[i], t.ownStats[i] = noOwner, nil
	}
	if l.dst != nil {
		t.observeParams(l.dst, l.dstRoute, l.rk, s, true)
	}
	if l.global != nil {
		t.observeParams(l.global, l.globalRoute, l.rk, s, false)
	}
	if l.grams {
		t.grams.addBatch(s, &t.owners)
	}
}

// heldOut decides whether a request is kept for calibration, from a seeded
// hash of its content and of how many identical requests came before it: the
// same multiset of requests holds back the same requests in any order, and
// repeats of one request are split like any others.
func (t *Trainer) heldOut(r *Request) bool {
	h := hashString(hashSeed^t.cfg.Seed*hashK1, r.Method)
	h = hashString(h, r.Path)
	h = hashString(h, r.Query)
	h = hashString(h, r.Source)
	h = hashString(h, r.Destination)
	h = hashBytes(h, r.Body)
	var k uint32
	if t.seen == nil {
		t.seen = map[uint64]uint32{}
	}
	if n, ok := t.seen[h]; ok || len(t.seen) < maxSeen {
		k = n
		t.seen[h] = n + 1
	}
	h = hashBytes(h, []byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)})
	t.lastHash = h
	return float64(h%1_000_000) < t.cfg.HoldBack*1_000_000
}

// maxSeen bounds the distinct requests whose repeats heldOut counts; beyond
// it, repeats of new contents all go the same way.
const maxSeen = 1 << 20

// cloneRequest copies a request the trainer keeps (held back, sampled),
// its body up to maxKeptBody: training keeps up to 50,000 requests, and
// bodies as long as the body limit would cost gigabytes. The size it was
// sent with stays in RequestBytes.
func cloneRequest(r *Request) Request {
	c := *r
	c.Headers = append([]Header(nil), r.Headers...)
	c.RequestBytes = max(r.RequestBytes, int64(len(r.Body)))
	c.Body = append([]byte(nil), r.Body[:min(len(r.Body), maxKeptBody)]...)
	return c
}

// maxKeptBody bounds the body of a request the trainer keeps.
const maxKeptBody = 16 << 10

// observe learns what a request says as a whole for a section (its
// caller, route, edge and size), and returns the section's statistics and
// the route's, or nils when the request is over a cap.
func (t *Trainer) observe(r *Request, dst, src string, rk routeKey) (*workloadStats, *routeStats) {
	w := t.workloads[dst]
	if w == nil {
		w = &workloadStats{perSource: map[string]int{}, routes: map[routeKey]*routeStats{}, edges: map[edgeName]uint32{}, params: map[paramName]*paramStats{}}
		t.workloads[dst] = w
	}
	if w.perSource[src] >= t.cfg.MaxPerSource {
		return nil, nil
	}
	if _, known := w.perSource[src]; !known && len(w.perSource) >= t.cfg.MaxSourcesPerWorkload {
		return nil, nil
	}
	rs := w.routes[rk]
	if rs == nil {
		if len(w.routes) >= t.cfg.MaxRoutesPerWorkload {
			return nil, nil
		}
		rs = &routeStats{names: map[string]uint32{}}
		w.routes[rk] = rs
	}
	w.perSource[src]++
	rs.count++
	rs.numbers.observe(r)
	w.edges[edgeName{src, rk}]++
	return w, rs
}

// observeParams learns a batch of a request's parameters for a section;
// own says the section is the request's destination (whose statistics own
// the parameters' trigrams).
func (t *Trainer) observeParams(w *workloadStats, rs *routeStats, rk routeKey, s *paramScratch, own bool) {
	if w.anyParam == nil && s.n > 0 {
		w.anyParam = newParamStats()
	}
	for i := 0; i < s.n; i++ {
		p := &s.params[i]
		name := string(p.name)
		// Headers mean the same on every route: one model per workload.
		header := p.header
		if header {
			name = headerPrefix + name
		}
		key := paramName{rk, name}
		if header {
			key.route = anyRouteKey
		}
		ps := w.params[key]
		if ps == nil {
			if !header && len(rs.names) >= t.cfg.MaxParamsPerRoute {
				continue
			}
			ps = newParamStats()
			if t.cfg.ShapedValues {
				ps.values = nil
			}
			ps.id = int32(len(t.stats))
			ps.any = w.anyParam
			t.stats = append(t.stats, ps)
			w.params[key] = ps
		}
		if !header && !p.cont {
			rs.names[name]++
		}
		switch {
		case own:
			t.owners[i], t.ownStats[i] = ps.id, ps
		case t.ownStats[i] != nil && t.ownStats[i].twin == nil:
			t.ownStats[i].twin = ps
		}
		ps.observe(p)
		w.anyParam.observe(p)
	}
}

// Samples returns how many requests were learned, how many were skipped
// (over a cap), how many the current model flagged, and how many were held
// back for calibration.
func (t *Trainer) Samples() (learned, skipped, flagged, heldBack uint64) {
	return t.samples, t.skipped, t.flagged, uint64(len(t.heldBack))
}

// Model builds the model from what was observed and calibrates it on the
// held-back requests.
func (t *Trainer) Model() (*Model, error) {
	if t.samples == 0 {
		return nil, errors.New("train: no requests learned")
	}
	if t.grams != nil && !t.credited {
		t.grams.credit(t.stats)
		t.credited = true
	}
	now := t.cfg.Now
	if now.IsZero() {
		now = time.Now()
	}
	m := &Model{
		Meta: Meta{
			TrainedAt: now.UTC(),
			Samples:   t.samples,
			Seed:      t.cfg.Seed,
			TargetFPR: t.cfg.TargetFPR,
			Threshold: 0.5,
		},
		Workloads: make(map[string]*Workload, len(t.workloads)),
	}
	for name, ws := range t.workloads {
		w := &Workload{Name: name}
		srcIdx := map[string]uint32{}
		for s := range ws.perSource {
			srcIdx[s] = uint32(len(w.Sources))
			w.Sources = append(w.Sources, s)
		}
		routeIdx := map[routeKey]uint32{}
		for rk, rs := range ws.routes {
			routeIdx[rk] = uint32(len(w.Routes))
			r := Route{Method: rk.method, Template: rk.template, Count: rs.count, Numbers: rs.numbers}
			for _, c := range rs.names {
				r.ParamObs += c
				if c == 1 {
					r.ParamSingletons++
				}
			}
			w.Routes = append(w.Routes, r)
		}
		for e, n := range ws.edges {
			w.Edges = append(w.Edges, Edge{Source: srcIdx[e.source], Route: routeIdx[e.route], Count: n})
		}
		for pn, ps := range ws.params {
			route := uint32(AnyRoute)
			if pn.route != anyRouteKey {
				route = routeIdx[pn.route]
			}
			w.Params = append(w.Params, ps.model(route, pn.name))
		}
		if ws.anyParam != nil {
			w.Params = append(w.Params, ws.anyParam.model(AnyRoute, AnyParam))
		}
		w.sortCanonical()
		w.index()
		m.Workloads[name] = w
	}
	t.trainContent(m)
	t.calibrate(m)
	if _, err := Encode(m); err != nil {
		return nil, err
	}
	return m, nil
}

// calibrate fits, on the held-back normal requests, what turns surprises
// into scores: each parameter's tail (ParamModel.tail), then each part's
// (Workload.Tails), then where the combined surprise of a typical request
// lies (CalBase; CalCenter is that of a request as rare as TargetFPR). Each
// held-back request calibrates its destination's section and the global
// one; a section with too few held-back requests takes the global one's
// tails. The request phase is calibrated without the response, the response
// phase with it.
func (t *Trainer) calibrate(m *Model) {
	type sample struct {
		w *Workload
		r *Request
	}
	var samples []sample
	global := m.Workloads[GlobalWorkload]
	for i := range t.heldBack {
		r := &t.heldBack[i]
		w := m.Workload(r.Destination)
		if w == nil {
			continue
		}
		samples = append(samples, sample{w, r})
		if global != nil && w != global {
			samples = append(samples, sample{global, r})
		}
	}
	var s Scratch
	// The request phase decides before a response exists.
	score := func(x sample, response bool) Verdict {
		req := *x.r
		if !response {
			req.Status, req.ResponseBytes = 0, 0
		}
		var v Verdict
		x.w.measure(&req, &s, &v)
		return v
	}
	// Each parameter against its own held-back values.
	raw := map[*ParamModel][]float64{}
	s.params.collect = func(pm *ParamModel, x float64) { raw[pm] = append(raw[pm], x) }
	for _, x := range samples {
		score(x, false)
	}
	s.params.collect = nil
	for pm, xs := range raw {
		pm.TailMed, pm.TailBeta = fitParamTail(xs)
	}
	// Each part against its own held-back surprises.
	parts := map[*Workload]*[NParts][]float64{}
	for _, x := range samples {
		ps := parts[x.w]
		if ps == nil {
			ps = new([NParts][]float64)
			parts[x.w] = ps
		}
		v := score(x, false)
		ps[partStructure] = append(ps[partStructure], v.Parts[PartCaller]+v.Parts[PartRoute]+v.Parts[PartEdge]+v.Parts[PartNames])
		for p := PartValues; p < requestParts; p++ {
			ps[p] = append(ps[p], v.Parts[p])
		}
		if x.r.Status != 0 {
			v := score(x, true)
			for p := requestParts; p < NParts; p++ {
				ps[p] = append(ps[p], v.Parts[p])
			}
		}
	}
	fit := func(w *Workload) {
		ps := parts[w]
		for p := Part(0); p < NParts; p++ {
			if !p.calibrated() {
				continue
			}
			w.Tails[p] = Tail{}
			if ps != nil && len(ps[p]) >= minTailSample {
				w.Tails[p] = fitTail(ps[p])
			}
		}
	}
	if global != nil {
		fit(global)
	}
	for _, w := range m.Workloads {
		if w == global {
			continue
		}
		if ps := parts[w]; ps != nil && len(ps[PartValues]) >= minTailSample || global == nil {
			fit(w)
		} else {
			w.Tails = global.Tails
		}
	}
	// Where typical requests lie once combined.
	per, perResp := map[*Workload][]float64{}, map[*Workload][]float64{}
	for _, x := range samples {
		v := score(x, false)
		x.w.judge(&v, false)
		per[x.w] = append(per[x.w], v.Surprise)
		if x.r.Status != 0 {
			v := score(x, true)
			x.w.judge(&v, true)
			perResp[x.w] = append(perResp[x.w], v.Surprise)
		}
	}
	for _, w := range m.Workloads {
		calibrated := w.Tails[PartValues].Slope > 0 || w.Tails[PartContent].Slope > 0
		w.CalBase, w.CalCenter = combinedCalibration(per[w], t.cfg.TargetFPR, calibrated)
		w.RespBase, w.RespCenter = 0, 0
		if len(perResp[w]) > 0 {
			w.RespBase, w.RespCenter = combinedCalibration(perResp[w], t.cfg.TargetFPR, calibrated)
		}
		w.contentNamedAt = w.Tails[PartContent].inverse(reasonTail)
	}
}

// minTailSample is the least number of held-back requests a section needs
// to fit its parts' tails; with fewer, it takes the global section's, and
// when that has fewer too, surprises stand as their models say (a Tail of
// zeros). Fewer than 200 requests put no knot beyond the 2.5 % share and
// fit the slope beyond the last on a handful of requests: a tail read from
// noise would reorder the parts, not calibrate them.
const minTailSample = 200

// combinedCalibration returns where a section's combined surprises put a
// typical request (the median of the held-back ones) and a request as rare
// as fpr: -ln fpr when the parts are calibrated, since the combined
// surprise is then -ln of a p-value; otherwise (too few held-back requests
// to fit the parts' tails) read from the held-back requests' own combined
// surprises, beyond the largest by an exponential tail fitted to the
// largest few (their mean excess over the fifth largest). It sorts xs.
func combinedCalibration(xs []float64, fpr float64, calibrated bool) (base, center float64) {
	center = -math.Log(fpr)
	if len(xs) == 0 {
		return 0, center
	}
	sort.Float64s(xs)
	base = xs[len(xs)/2]
	if !calibrated {
		n := len(xs)
		k := min(n, minTailPoints)
		u := xs[n-k]
		var excess float64
		for _, x := range xs[n-k:] {
			excess += x - u
		}
		beta := max(excess/float64(k), minCalSpan)
		// k of n exceed u; fpr·n would exceed u + beta·ln(k/(fpr·n)).
		center = u + beta*math.Log(float64(k)/(fpr*float64(n)))
	}
	base = max(0, min(base, center-minCalSpan))
	return base, center
}

// minParamTail is how many held-back values a parameter needs for a tail
// of its own; with fewer, its surprises stand as they are.
const minParamTail = 8

// paramTailPrior is how many values the prior of a parameter's tail is
// worth.
const paramTailPrior = 64

// fitParamTail returns the median of a parameter's held-back surprises and
// their mean excess over it (at least a quarter nat), or zeros when there
// are too few. It sorts xs.
func fitParamTail(xs []float64) (med, beta float32) {
	if len(xs) < minParamTail {
		return 0, 0
	}
	sort.Float64s(xs)
	m := xs[len(xs)/2]
	var excess float64
	var n int
	for _, x := range xs {
		if x > m {
			excess += x - m
			n++
		}
	}
	b := 1.0
	if n > 0 {
		b = max(1, excess/float64(n))
	}
	// Few values say little: shrunk towards no tail (median 0, spread 1)
	// as if paramTailPrior values had said so.
	k := float64(len(xs))
	m, b = m*k/(k+paramTailPrior), (b*k+paramTailPrior)/(k+paramTailPrior)
	return float32(m), float32(b)
}

// minCalSpan is the floor of a calibration's span: a surprise less than one
// nat above typical (an event normal traffic shows more than a third of the
// time) never reaches the threshold on its own.
const minCalSpan = 1.0

func sortStrings(s []string) { sort.Strings(s) }
