package models

import (
	"bytes"
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
	// MaxGlobalBytes bounds the global (fallback) part's encoding: trained
	// over every destination, it would grow with the mesh, so beyond this
	// it keeps its most frequent callers, routes and parameters.
	MaxGlobalBytes int
	// Current, when set, is the model in force: requests it flags are not
	// learned as normal, so an attack in progress cannot teach itself in.
	Current *Model
	// ShapedValues says the requests carry parameter values as their
	// character-class shapes (as the filter ships them), not the values:
	// no enumeration is learned then, since shapes of distinct values
	// coincide and every real value would look new.
	ShapedValues bool
	// ValueKeyID is the ID of the value key the filters whose records are
	// learned make their digests with (ValueKey.ID), with ShapedValues:
	// a parameter whose short values all came with a digest is enumerated
	// by them (ParamModel.HashEnum). 0: digests are not learned.
	ValueKeyID uint32
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
		MaxGlobalBytes:        24 << 10,
	}
}

// ShapedTrainConfig is DefaultTrainConfig as the control plane trains: on
// the value shapes filters ship, not the values (ShapedValues). Offline
// evaluation trains the same way to measure the model a mesh runs.
func ShapedTrainConfig() TrainConfig {
	c := DefaultTrainConfig()
	c.ShapedValues = true
	return c
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
	if c.MaxGlobalBytes < 1024 {
		errs = append(errs, fmt.Errorf("max_global_bytes: %d must be at least 1024", c.MaxGlobalBytes))
	}
	return errors.Join(errs...)
}

// Trainer accumulates normal requests and builds a Model from them.
//
// Workloads train independently: Finish(dst) turns a destination's
// statistics into its encoded part at once and lets them go, so a trainer
// fed one destination at a time (as the control plane reads its store)
// holds one workload's statistics, the global part's (bounded by the
// per-workload caps), the finished parts' encodings, the held-back requests
// (MaxHoldBack) and the content sample (2,048 requests), whatever the size
// of the mesh. Requests may also come interleaved, as from a capture.
type Trainer struct {
	cfg       TrainConfig
	current   *Model // the model in force (TrainConfig.Current, UseCurrent)
	workloads map[string]*workloadStats
	// records holds the finished workloads' parts, encoded (appendWorkload)
	// and not yet calibrated.
	records  map[string][]byte
	heldBack []Request
	// held counts the requests held back, after heldBack is let go.
	held uint64
	// seen counts occurrences per request content (heldOut), per
	// destination so that Finish can let them go; nSeen is their total.
	seen    map[string]map[uint64]uint32
	nSeen   int
	samples uint64
	skipped uint64
	flagged uint64
	scratch paramScratch
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
	// drawn is the request being learned as scoring would have read it,
	// its body in drawnBody (readable).
	drawn     Request
	drawnBody []byte
	// unmarked is heldOut's working memory.
	unmarked []byte
}

// sampledRequest is a request of the content sample, until its workload
// is finished; then its content vector.
type sampledRequest struct {
	hash       uint64
	req        Request
	vec        ContentVector
	vectorized bool
}

type workloadStats struct {
	perSource map[string]int
	routes    map[routeKey]*routeStats
	edges     map[edgeName]uint32
	params    map[paramName]*paramStats
	anyParam  *paramStats
	// shaped says the values learned are shapes (TrainConfig.ShapedValues);
	// keyID is the value key's whose digests are learned (0: none).
	shaped bool
	keyID  uint32
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
	return &Trainer{cfg: cfg, current: cfg.Current, workloads: map[string]*workloadStats{}, records: map[string][]byte{}}, nil
}

// UseCurrent makes m the model in force for the requests observed from now
// on (see TrainConfig.Current): the control plane, training one workload at
// a time, gives each its own section in force rather than holding the
// whole model in force.
func (t *Trainer) UseCurrent(m *Model) { t.current = m }

// Observe learns one normal request, for its destination and for the global
// fallback, or holds it back for calibration. It returns false when the
// request was not learned (its source is over its cap, the current model
// flags it, or it was held back).
func (t *Trainer) Observe(r *Request) bool { return t.observeRequest(r, true) }

// ObserveOwn is Observe for a request that must teach only its
// destination's section, never the global fallback other workloads are
// scored against: the control plane learns destinations it cannot vouch
// for (invented by one caller) this way.
func (t *Trainer) ObserveOwn(r *Request) bool { return t.observeRequest(r, false) }

func (t *Trainer) observeRequest(r *Request, global bool) bool {
	if _, done := t.records[r.Destination]; done {
		// Its part is built already (Finish): a straggler is not learned.
		t.skipped++
		return false
	}
	shipped := r
	r, cut := t.readable(r)
	if t.current != nil {
		if v := t.current.Score(r); v.Scored && v.Score > t.current.Meta.Threshold {
			t.flagged++
			return false
		}
	}
	if t.heldOut(shipped) {
		if len(t.heldBack) < t.cfg.MaxHoldBack {
			// Kept as shipped (drawn out when scored: see calibratePart).
			t.heldBack = append(t.heldBack, cloneRequest(shipped))
			t.held++
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
	if global && r.Destination != GlobalWorkload {
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
		body := r.Body
		if r != &t.drawn {
			body = body[:min(len(body), DefaultBodyLimit)]
		}
		t.scratch.feed(body)
		t.scratch.finish(cut)
	}
	if ok {
		t.samples++
		t.sampleContent(r)
	} else {
		t.skipped++
	}
	return ok
}

// readable returns the request as scoring would have read it, and whether
// its body's last value is cut. A record's body is the shape of the body's
// first MaxBodyPrefix bytes, and what lay past them in short (ShapeBody):
// trained on shapes, a longer body is drawn out to the lengths its marks
// say (expandBody), its last value cut unless marked (a filter that did not
// read past the prefix ships no mark, and its prefix ends in a value).
// Otherwise the request is as it came, its body read up to DefaultBodyLimit
// as scoring reads it. A request drawn out is t.drawn, until the next call.
func (t *Trainer) readable(r *Request) (*Request, bool) {
	if !t.cfg.ShapedValues {
		return r, len(r.Body) > DefaultBodyLimit
	}
	t.drawn = *r
	t.drawn.marked = true
	if bodyRead(r) <= MaxBodyPrefix || len(r.Body) == 0 {
		// Past the prefix, a record's body carries marks (BodyTail); a
		// JSON body's form of its fields can pass it when the body
		// does not.
		return &t.drawn, len(r.Body) > DefaultBodyLimit
	}
	var whole bool
	t.drawn.Body, whole = expandBody(t.drawnBody[:0], r)
	t.drawnBody = t.drawn.Body
	return &t.drawn, !whole
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
	query, body := stringBytes(r.Query), r.Body
	if t.cfg.ShapedValues && (bytes.IndexByte(query, '~') >= 0 || bytes.IndexByte(body, '~') >= 0) {
		// Without the values' digest marks: which requests are held back
		// does not depend on the value key (nor change with it).
		t.unmarked = appendUnmarked(t.unmarked[:0], query)
		n := len(t.unmarked)
		t.unmarked = appendUnmarked(t.unmarked, body)
		query, body = t.unmarked[:n], t.unmarked[n:]
	}
	h = hashBytes(h, query)
	h = hashString(h, r.Source)
	h = hashString(h, r.Destination)
	h = hashBytes(h, body)
	var k uint32
	if t.seen == nil {
		t.seen = map[string]map[uint64]uint32{}
	}
	seen := t.seen[r.Destination]
	if seen == nil {
		seen = map[uint64]uint32{}
		t.seen[r.Destination] = seen
	}
	n, ok := seen[h]
	if !ok && t.nSeen < maxSeen {
		t.nSeen++
		ok = true
	}
	if ok {
		k = n
		seen[h] = n + 1
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
const maxKeptBody = max(16<<10, MaxShippedBody)

// observe learns what a request says as a whole for a section (its
// caller, route, edge and size), and returns the section's statistics and
// the route's, or nils when the request is over a cap.
func (t *Trainer) observe(r *Request, dst, src string, rk routeKey) (*workloadStats, *routeStats) {
	w := t.workloads[dst]
	if w == nil {
		w = &workloadStats{perSource: map[string]int{}, routes: map[routeKey]*routeStats{}, edges: map[edgeName]uint32{}, params: map[paramName]*paramStats{}, shaped: t.cfg.ShapedValues}
		if t.cfg.ShapedValues {
			w.keyID = t.cfg.ValueKeyID
		}
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
			ps.id = int32(len(t.stats))
			ps.any, ps.ws = w.anyParam, w
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
	return t.samples, t.skipped, t.flagged, t.held
}

// Finish builds dst's part from its statistics and lets them go: no
// request to dst may come after (one that does is not learned). Sections
// and Model finish every workload left.
func (t *Trainer) Finish(dst string) {
	ws := t.workloads[dst]
	if ws == nil || dst == GlobalWorkload {
		return
	}
	if t.grams != nil && !t.credited {
		// Finished before the others: its parameters are credited with
		// the trigrams only they have had so far.
		t.grams.creditWorkload(t.stats, ws)
	}
	w := ws.build(dst)
	t.vectorize(w)
	t.records[dst] = appendWorkload(nil, w)
	for _, ps := range ws.params {
		// Credited: let them go (a trigram they own is never again a
		// singleton credit would look up).
		t.stats[ps.id] = nil
	}
	delete(t.workloads, dst)
	t.nSeen -= len(t.seen[dst])
	delete(t.seen, dst)
}

// build turns a workload's statistics into its part, indexed for scoring,
// not yet calibrated.
func (ws *workloadStats) build(name string) *Workload {
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
		pm := ps.model(route, pn.name)
		if ws.shaped {
			pm.enumerateShapes()
		}
		if ws.keyID != 0 && ps.enumerateDigests(&pm) {
			w.ValueKeyID = ws.keyID
		}
		w.Params = append(w.Params, pm)
	}
	if ws.anyParam != nil {
		w.Params = append(w.Params, ws.anyParam.model(AnyRoute, AnyParam))
	}
	w.sortCanonical()
	// Calibrated once every part is built (Trainer.calibrate); until then
	// a placeholder the codec accepts.
	w.CalBase, w.CalCenter = 0, 1
	w.index()
	return w
}

// Model builds the whole model from what was observed and calibrates it on
// the held-back requests. It ends training, as Sections does.
func (t *Trainer) Model() (*Model, error) {
	s, err := t.Sections()
	if err != nil {
		return nil, err
	}
	return s.Model()
}

// Sections builds the model as its parts — each workload's part encoded on
// its own, the content model once — calibrated on the held-back requests,
// without holding every part decoded at once. It ends training.
func (t *Trainer) Sections() (*Sections, error) {
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
	for _, dst := range sortedKeys(t.workloads) {
		t.Finish(dst)
	}
	if ws := t.workloads[GlobalWorkload]; ws != nil {
		g := ws.build(GlobalWorkload)
		t.vectorize(g)
		rec, err := pruneGlobal(g, t.cfg.MaxGlobalBytes)
		if err != nil {
			return nil, err
		}
		t.records[GlobalWorkload] = rec
		delete(t.workloads, GlobalWorkload)
		t.seen = nil
	}
	s := &Sections{
		Meta: Meta{
			TrainedAt: now.UTC(),
			Samples:   t.samples,
			Seed:      t.cfg.Seed,
			TargetFPR: t.cfg.TargetFPR,
			Threshold: 0.5,
		},
		content: t.buildContent(),
		records: t.records,
	}
	t.contentSample = nil
	if err := t.calibrate(s); err != nil {
		return nil, err
	}
	return s, nil
}

// calibrate fits, on the held-back normal requests, what turns surprises
// into scores: each parameter's tail (ParamModel.tail), then each part's
// (Workload.Tails), then where the combined surprise of a typical request
// lies (CalBase; CalCenter is that of a request as rare as TargetFPR). Each
// held-back request calibrates its destination's part and the global one;
// a part with too few held-back requests to fit tails (minTailSample) lets
// its surprises stand and reads where a rare request lies from its own
// held-back requests, their tail's scale borrowed in part from the other
// such parts (combinedCalibration, a second pass). The request phase is
// calibrated without the response, the response phase with it. Parts are
// decoded one at a time.
func (t *Trainer) calibrate(s *Sections) error {
	// The held-back requests of each part: their destination's, and every
	// one of them the global part's.
	held := map[string][]*Request{}
	_, hasGlobal := s.records[GlobalWorkload]
	for i := range t.heldBack {
		r := &t.heldBack[i]
		name := r.Destination
		if _, ok := s.records[name]; ok && name != GlobalWorkload {
			held[name] = append(held[name], r)
		}
		if hasGlobal {
			held[GlobalWorkload] = append(held[GlobalWorkload], r)
		}
	}
	var sc Scratch
	// The combined surprises of the held-back requests of the parts whose
	// threshold is read from them, and where their encoding keeps it.
	type thinPart struct {
		per [2][]float64 // request and response phase
		cal int
	}
	thin := map[string]*thinPart{}
	for _, name := range sortedKeys(s.records) {
		w, err := s.Workload(name)
		if err != nil {
			return err
		}
		per, perResp, calibrated := t.calibratePart(w, held[name], &sc)
		rec, cal := appendWorkloadCal(nil, w)
		s.records[name] = rec
		if !calibrated && name != GlobalWorkload {
			thin[name] = &thinPart{per: [2][]float64{per, perResp}, cal: cal}
		}
	}
	t.heldBack = nil
	if len(thin) < 2 {
		return nil
	}
	// Each thin part's tail scale, shrunk towards the median of the other
	// thin parts' (tailPriors), its threshold read again and written into
	// its encoding in place: at 10,000 services every part is thin, and
	// decoding them all again took seconds.
	names := sortedKeys(thin)
	var priors [2][]tailPrior
	for phase := range priors {
		var xs [][]float64
		for _, name := range names {
			xs = append(xs, thin[name].per[phase])
		}
		priors[phase] = tailPriors(xs)
	}
	for i, name := range names {
		tp := thin[name]
		base, center := combinedCalibration(tp.per[0], t.cfg.TargetFPR, false, priors[0][i])
		var respBase, respCenter float64 // none without responses
		if len(tp.per[1]) > 0 {
			respBase, respCenter = combinedCalibration(tp.per[1], t.cfg.TargetFPR, false, priors[1][i])
		}
		patchCalibration(s.records[name], tp.cal, base, center, respBase, respCenter)
	}
	return nil
}

// calibratePart calibrates one part on its held-back requests (see
// calibrate). It returns their combined surprises, sorted, in the request
// and the response phase, and whether the part's tails were fitted.
func (t *Trainer) calibratePart(w *Workload, held []*Request, s *Scratch) (per, perResp []float64, calibrated bool) {
	// The request phase decides before a response exists.
	score := func(r *Request, response bool) Verdict {
		// Drawn out at each of its three scorings into one buffer, not
		// kept drawn out: every held-back record could claim 64 KiB.
		readable, _ := t.readable(r)
		req := *readable
		if !response {
			req.Status, req.ResponseBytes = 0, 0
		}
		var v Verdict
		w.measure(&req, s, &v)
		return v
	}
	// Each parameter against its own held-back values, and the workload's.
	raw := map[*ParamModel][]float64{}
	s.params.collect = func(pm *ParamModel, x float64) { raw[pm] = append(raw[pm], x) }
	for _, r := range held {
		score(r, false)
	}
	s.params.collect = nil
	fitParamTails(w.Params, raw)
	// Each part against its own held-back surprises.
	var ps [NParts][]float64
	for _, r := range held {
		v := score(r, false)
		ps[partStructure] = append(ps[partStructure], v.Parts[PartCaller]+v.Parts[PartRoute]+v.Parts[PartEdge]+v.Parts[PartNames])
		for p := PartValues; p < requestParts; p++ {
			ps[p] = append(ps[p], v.Parts[p])
		}
		if r.Status != 0 {
			v := score(r, true)
			for p := requestParts; p < NParts; p++ {
				ps[p] = append(ps[p], v.Parts[p])
			}
		}
	}
	// A part's own held-back requests, or none: the global part's tails
	// do not fit a smaller workload's surprises, which its sparser models
	// make run higher (an error status the workload saw twice costs 4 nats
	// where the global part, which saw it often, would call 4 nats rare).
	for p := Part(0); p < NParts; p++ {
		if !p.calibrated() {
			continue
		}
		w.Tails[p] = Tail{}
		if len(ps[p]) >= minTailSample {
			w.Tails[p] = fitTail(ps[p])
		}
	}
	w.contentNamedAt = w.Tails[PartContent].inverse(reasonTail)
	// Where typical requests lie once combined.
	for _, r := range held {
		v := score(r, false)
		w.judge(&v, false)
		per = append(per, v.Surprise)
		if r.Status != 0 {
			v := score(r, true)
			w.judge(&v, true)
			perResp = append(perResp, v.Surprise)
		}
	}
	calibrated = w.Tails[PartValues].Slope > 0 || w.Tails[PartContent].Slope > 0
	w.CalBase, w.CalCenter = combinedCalibration(per, t.cfg.TargetFPR, calibrated, tailPrior{})
	w.RespBase, w.RespCenter = 0, 0
	if len(perResp) > 0 {
		w.RespBase, w.RespCenter = combinedCalibration(perResp, t.cfg.TargetFPR, calibrated, tailPrior{})
	}
	return per, perResp, calibrated
}

// minTailSample is the least number of held-back requests a section needs
// to fit its parts' tails; with fewer, surprises stand as their models say
// (a Tail of zeros). Fewer than 200 requests put no knot beyond the 2.5 % share and
// fit the slope beyond the last on a handful of requests: a tail read from
// noise would reorder the parts, not calibrate them.
const minTailSample = 200

// combinedCalibration returns where a section's combined surprises put a
// typical request (the median of the held-back ones) and a request as rare
// as fpr: -ln fpr when the parts are calibrated, since the combined
// surprise is then -ln of a p-value; otherwise (too few held-back requests
// to fit the parts' tails) read from the held-back requests' own combined
// surprises: beyond the largest fifth of them (at least minTailPoints), by
// an exponential tail whose scale is the upper end of its 95 % confidence
// interval (tailScaleUpper), its excesses joined by prior's. Read from the
// estimate alone, a threshold extrapolated from a few dozen requests lets
// through more than twice the target rate in half of all trainings. It
// sorts xs.
func combinedCalibration(xs []float64, fpr float64, calibrated bool, prior tailPrior) (base, center float64) {
	center = -math.Log(fpr)
	if len(xs) == 0 {
		return 0, center
	}
	sort.Float64s(xs)
	base = xs[len(xs)/2]
	if !calibrated {
		n := len(xs)
		u, sum, m := tailExcess(xs, tailPoints(n))
		beta := tailScaleUpper(sum+prior.scale*prior.weight, float64(m)+prior.weight)
		if beta < minCalSpan {
			// The floor, not the data, sets the scale: it is a least
			// slope, not an estimate, so it is extrapolated from as near
			// the target as the data reach (the fifth largest), not from
			// the largest fifth, which would only lengthen the way.
			u, _, m = tailExcess(xs, minTailPoints)
			beta = minCalSpan
		}
		// m+1 of n reach u; fpr·n would exceed u + beta·ln((m+1)/(fpr·n)).
		center = u + beta*math.Log(float64(m+1)/(fpr*float64(n)))
	}
	base = max(0, min(base, center-minCalSpan))
	return base, center
}

// tailPoints is how many of n held-back requests' combined surprises an
// uncalibrated section's tail is read from: the largest fifth, at least
// minTailPoints.
func tailPoints(n int) int { return max(minTailPoints, n/5) }

// tailExcess returns, of sorted surprises, the least of the largest k (u),
// and the sum and number of the others' excesses over it: an exponential
// tail's sufficient statistics.
func tailExcess(xs []float64, k int) (u, sum float64, m int) {
	n := len(xs)
	k = min(n, k)
	u = xs[n-k]
	for _, x := range xs[n-k+1:] {
		sum += x - u
	}
	return u, sum, k - 1
}

// tailPrior is what a section's tail scale borrows from other sections':
// their scale, worth weight excesses of its own.
type tailPrior struct{ scale, weight float64 }

// tailPriorWeight is how many excesses the other sections' scale is worth
// beside a section's own.
const tailPriorWeight = 8

// tailPriors returns, for each of the sections' combined surprises,
// the median tail scale of the others (those with at least one excess):
// a median, so that no one section (a workload whose traffic an attacker
// shapes) moves the others' thresholds far. With no other such section,
// there is no prior. It sorts each of xs.
func tailPriors(xs [][]float64) []tailPrior {
	scales := make([]float64, len(xs))
	var sorted []float64
	for i, x := range xs {
		scales[i] = -1
		if len(x) < 2 {
			continue
		}
		sort.Float64s(x)
		if _, sum, m := tailExcess(x, tailPoints(len(x))); m > 0 {
			scales[i] = sum / float64(m)
			sorted = append(sorted, scales[i])
		}
	}
	sort.Float64s(sorted)
	out := make([]tailPrior, len(xs))
	for i, own := range scales {
		others := len(sorted)
		if own >= 0 {
			others--
		}
		if others == 0 {
			continue
		}
		// The median of sorted without own (one occurrence of it).
		mid := (others - 1) / 2
		skip := len(sorted)
		if own >= 0 {
			skip = sort.SearchFloat64s(sorted, own)
		}
		j := mid
		if j >= skip {
			j++
		}
		out[i] = tailPrior{scale: sorted[j], weight: tailPriorWeight}
	}
	return out
}

// tailScaleUpper returns the upper end of the one-sided 95 % confidence
// interval of an exponential tail's scale from the sum of m excesses over
// a threshold: 2·sum over the 5 % quantile of the chi-square distribution
// with 2m degrees of freedom (Wilson-Hilferty's approximation, which errs
// on the safe side for few degrees). 0 when m is 0.
func tailScaleUpper(sum, m float64) float64 {
	if m <= 0 {
		return 0
	}
	const z = -1.6449 // the standard normal's 5 % quantile
	nu := 2 * m
	c := 2 / (9 * nu)
	q := 1 - c + z*math.Sqrt(c)
	return 2 * sum / (nu * q * q * q)
}

// minParamTail is how many held-back values (of all parameters) a workload
// needs for its parameters' tails; with fewer, surprises stand as they are.
const minParamTail = 8

// paramTailPrior is how many values the prior of a parameter's tail (the
// workload's pooled tail) is worth.
const paramTailPrior = 64

// fitParamTails sets each parameter's tail (ParamModel.tail) from its
// held-back surprises (raw), shrunk towards the tail of every held-back
// value of the workload pooled, as if paramTailPrior values had said so. A
// parameter with few or no held-back values is judged on the workload's
// scale, not on its raw surprises: the values part is the worst of a
// request's values, and a parameter left raw beside calibrated ones would
// set it for being uncalibrated, not unusual. With fewer than minParamTail
// values in all, every tail is zero (surprises stand).
func fitParamTails(params []ParamModel, raw map[*ParamModel][]float64) {
	var all []float64
	for i := range params {
		all = append(all, raw[&params[i]]...)
	}
	if len(all) < minParamTail {
		for i := range params {
			params[i].TailMed, params[i].TailBeta = 0, 0
		}
		return
	}
	m0, b0 := medianExcess(all)
	for i := range params {
		p := &params[i]
		m, b, k := m0, b0, 0.0
		if xs := raw[p]; len(xs) > 0 {
			m, b = medianExcess(xs)
			k = float64(len(xs))
		}
		p.TailMed = float32((m*k + m0*paramTailPrior) / (k + paramTailPrior))
		p.TailBeta = float32((b*k + b0*paramTailPrior) / (k + paramTailPrior))
	}
}

// medianExcess returns the median of surprises and their mean excess over
// it (at least a nat, one nat per nat at most: see maxSlope). It sorts xs.
func medianExcess(xs []float64) (med, beta float64) {
	sort.Float64s(xs)
	med = xs[len(xs)/2]
	var excess float64
	var n int
	for _, x := range xs {
		if x > med {
			excess += x - med
			n++
		}
	}
	beta = 1
	if n > 0 {
		beta = max(1, excess/float64(n))
	}
	return med, beta
}

// minCalSpan is the floor of a calibration's span: a surprise less than one
// nat above typical (an event normal traffic shows more than a third of the
// time) never reaches the threshold on its own.
const minCalSpan = 1.0

func sortStrings(s []string) { sort.Strings(s) }
