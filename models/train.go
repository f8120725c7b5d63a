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
	grams gramCounts
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
	if t.current != nil {
		if v := t.current.Score(r); v.Scored && v.Score > t.current.Meta.Threshold {
			t.flagged++
			return false
		}
	}
	if t.heldOut(r) {
		if len(t.heldBack) < t.cfg.MaxHoldBack {
			t.heldBack = append(t.heldBack, cloneRequest(r))
			t.held++
			return false
		}
	}
	src := r.Source
	if len(src) > t.cfg.MaxSourceLen {
		src = src[:t.cfg.MaxSourceLen]
	}
	rk := routeKey{method: r.Method, template: Template(r.Path)}
	t.scratch.extract(r)
	ok := t.observe(r, r.Destination, src, rk)
	if global && r.Destination != GlobalWorkload {
		t.observe(r, GlobalWorkload, src, rk)
	}
	if ok {
		t.samples++
		t.sampleContent(r)
	} else {
		t.skipped++
	}
	return ok
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

func cloneRequest(r *Request) Request {
	c := *r
	c.Headers = append([]Header(nil), r.Headers...)
	c.Body = append([]byte(nil), r.Body...)
	return c
}

func (t *Trainer) observe(r *Request, dst, src string, rk routeKey) bool {
	w := t.workloads[dst]
	if w == nil {
		w = &workloadStats{perSource: map[string]int{}, routes: map[routeKey]*routeStats{}, edges: map[edgeName]uint32{}, params: map[paramName]*paramStats{}}
		t.workloads[dst] = w
	}
	if w.perSource[src] >= t.cfg.MaxPerSource {
		return false
	}
	if _, known := w.perSource[src]; !known && len(w.perSource) >= t.cfg.MaxSourcesPerWorkload {
		return false
	}
	rs := w.routes[rk]
	if rs == nil {
		if len(w.routes) >= t.cfg.MaxRoutesPerWorkload {
			return false
		}
		rs = &routeStats{names: map[string]uint32{}}
		w.routes[rk] = rs
	}
	w.perSource[src]++
	rs.count++
	rs.numbers.observe(r)
	w.edges[edgeName{src, rk}]++
	if w.anyParam == nil && t.scratch.n > 0 {
		w.anyParam = newParamStats()
	}
	for i := 0; i < t.scratch.n; i++ {
		p := &t.scratch.params[i]
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
			w.params[key] = ps
		}
		if !header {
			rs.names[name]++
		}
		ps.observe(p.value)
		w.anyParam.observe(p.value)
	}
	return true
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
	w := ws.build(dst)
	t.vectorize(w)
	t.records[dst] = appendWorkload(nil, w)
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
		w.Params = append(w.Params, ps.model(route, pn.name))
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

// minCalibration is the least number of held-back requests a workload needs
// to be calibrated on its own, whatever the target false-positive rate; it
// also needs 1/TargetFPR of them, or the quantile it would read is noise.
// With fewer it takes the calibration pooled over every workload.
const minCalibration = 50

func (t *Trainer) enoughToCalibrate(n int) bool {
	return n >= minCalibration && float64(n) >= 1/t.cfg.TargetFPR
}

// calibrate sets each part's CalBase and CalCenter from the surprises of
// its held-back normal requests: their median, and what TargetFPR of them
// exceed. Parts are decoded one at a time.
func (t *Trainer) calibrate(s *Sections) error {
	// The held-back requests by the part that scores them: their
	// destination's, else the global one.
	held := map[string][]int{}
	for i := range t.heldBack {
		name := t.heldBack[i].Destination
		if _, ok := s.records[name]; !ok {
			name = GlobalWorkload
		}
		if _, ok := s.records[name]; ok {
			held[name] = append(held[name], i)
		}
	}
	per, perResp := map[string][]float64{}, map[string][]float64{}
	var pooled, pooledResp []float64
	var ps paramScratch
	for _, name := range sortedKeys(held) {
		w, err := s.Workload(name)
		if err != nil {
			return err
		}
		for _, i := range held[name] {
			r := &t.heldBack[i]
			// The request phase decides before a response exists.
			req := *r
			req.Status, req.ResponseBytes = 0, 0
			var v Verdict
			w.surprise(&req, &ps, &v)
			per[name] = append(per[name], v.Surprise)
			pooled = append(pooled, v.Surprise)
			// The response phase, when the response is known.
			if r.Status != 0 {
				var vr Verdict
				w.surprise(r, &ps, &vr)
				perResp[name] = append(perResp[name], vr.Surprise)
				pooledResp = append(pooledResp, vr.Surprise)
			}
		}
	}
	t.heldBack = nil
	base, center := calibration(pooled, t.cfg.TargetFPR)
	var rbase, rcenter float64
	if len(pooledResp) > 0 {
		rbase, rcenter = calibration(pooledResp, t.cfg.TargetFPR)
	}
	for name, rec := range s.records {
		var err error
		s.records[name], err = rewriteRecord(rec, func(w *Workload) {
			w.CalBase, w.CalCenter = base, center
			if xs := per[name]; t.enoughToCalibrate(len(xs)) {
				w.CalBase, w.CalCenter = calibration(xs, t.cfg.TargetFPR)
			}
			w.RespBase, w.RespCenter = rbase, rcenter
			if xs := perResp[name]; t.enoughToCalibrate(len(xs)) {
				w.RespBase, w.RespCenter = calibration(xs, t.cfg.TargetFPR)
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// minCalSpan is the floor of a calibration's span: a surprise less than one
// nat above typical (an event normal traffic shows more than a third of the
// time) never reaches the threshold on its own.
const minCalSpan = 1.0

// calibration returns the median of xs and the value a share fpr of xs
// exceed, at least minCalSpan above the median.
func calibration(xs []float64, fpr float64) (base, center float64) {
	if len(xs) == 0 {
		return 0, 3 * minCalSpan
	}
	sort.Float64s(xs)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(xs)))) - 1
		return xs[max(0, min(len(xs)-1, i))]
	}
	base = q(0.5)
	return base, math.Max(q(1-fpr), base+minCalSpan)
}

func sortStrings(s []string) { sort.Strings(s) }
