package models

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// TrainConfig is everything training takes besides the requests.
type TrainConfig struct {
	// Seed makes training deterministic: same seed, same requests, same bytes.
	Seed uint64
	// TargetFPR is the false-positive rate the threshold is calibrated to.
	TargetFPR float64
	// MaxPerSource caps what one source may contribute to one destination,
	// so a single (possibly compromised) caller cannot drown the rest.
	MaxPerSource int
	// MaxSourceLen and MaxRoutesPerWorkload bound a model's size.
	MaxSourceLen          int
	MaxRoutesPerWorkload  int
	MaxSourcesPerWorkload int
	// Now stamps the model; zero means time.Now.
	Now time.Time
}

// DefaultTrainConfig returns the defaults, in one place.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{
		Seed:                  1,
		TargetFPR:             0.001,
		MaxPerSource:          100_000,
		MaxSourceLen:          256,
		MaxRoutesPerWorkload:  2000,
		MaxSourcesPerWorkload: 2000,
	}
}

// Validate reports every problem with the configuration.
func (c TrainConfig) Validate() error {
	var errs []error
	if !(c.TargetFPR > 0 && c.TargetFPR < 1) {
		errs = append(errs, fmt.Errorf("target_fpr: %v is not in (0,1)", c.TargetFPR))
	}
	if c.MaxPerSource <= 0 {
		errs = append(errs, fmt.Errorf("max_per_source: %d must be positive", c.MaxPerSource))
	}
	if c.MaxSourceLen <= 0 || c.MaxSourceLen > maxStringLen {
		errs = append(errs, fmt.Errorf("max_source_len: %d must be in [1,%d]", c.MaxSourceLen, maxStringLen))
	}
	if c.MaxRoutesPerWorkload <= 0 || c.MaxSourcesPerWorkload <= 0 {
		errs = append(errs, errors.New("max_routes_per_workload and max_sources_per_workload must be positive"))
	}
	return errors.Join(errs...)
}

// Trainer accumulates normal requests and builds a Model from them.
type Trainer struct {
	cfg       TrainConfig
	workloads map[string]*workloadStats
	samples   uint64
	skipped   uint64
}

type workloadStats struct {
	perSource map[string]int
	routes    map[routeKey]uint32
	edges     map[edgeName]uint32
}

type routeKey struct{ method, template string }

type edgeName struct {
	source string
	route  routeKey
}

// NewTrainer returns a trainer, or the configuration's problems.
func NewTrainer(cfg TrainConfig) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Trainer{cfg: cfg, workloads: map[string]*workloadStats{}}, nil
}

// Observe learns one normal request, for its destination and for the global
// fallback. It returns false when the request was not learned (its source
// is over its cap).
func (t *Trainer) Observe(r *Request) bool {
	src := r.Source
	if len(src) > t.cfg.MaxSourceLen {
		src = src[:t.cfg.MaxSourceLen]
	}
	rk := routeKey{method: r.Method, template: Template(r.Path)}
	ok := t.observe(r.Destination, src, rk)
	if r.Destination != GlobalWorkload {
		t.observe(GlobalWorkload, src, rk)
	}
	if ok {
		t.samples++
	} else {
		t.skipped++
	}
	return ok
}

func (t *Trainer) observe(dst, src string, rk routeKey) bool {
	w := t.workloads[dst]
	if w == nil {
		w = &workloadStats{perSource: map[string]int{}, routes: map[routeKey]uint32{}, edges: map[edgeName]uint32{}}
		t.workloads[dst] = w
	}
	if w.perSource[src] >= t.cfg.MaxPerSource {
		return false
	}
	if _, known := w.perSource[src]; !known && len(w.perSource) >= t.cfg.MaxSourcesPerWorkload {
		return false
	}
	if _, known := w.routes[rk]; !known && len(w.routes) >= t.cfg.MaxRoutesPerWorkload {
		return false
	}
	w.perSource[src]++
	w.routes[rk]++
	w.edges[edgeName{src, rk}]++
	return true
}

// Samples returns how many requests were learned and how many were skipped.
func (t *Trainer) Samples() (learned, skipped uint64) { return t.samples, t.skipped }

// Model builds the model from what was observed.
func (t *Trainer) Model() (*Model, error) {
	if t.samples == 0 {
		return nil, errors.New("train: no requests learned")
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
			// The caller graph flags only what was never seen, so any score
			// above zero is already evidence; the threshold sits just under
			// the weakest single graph signal.
			Threshold: scoreNewEdge - 0.05,
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
		for rk, n := range ws.routes {
			routeIdx[rk] = uint32(len(w.Routes))
			w.Routes = append(w.Routes, Route{Method: rk.method, Template: rk.template, Count: n})
		}
		for e, n := range ws.edges {
			w.Edges = append(w.Edges, Edge{Source: srcIdx[e.source], Route: routeIdx[e.route], Count: n})
		}
		w.sortCanonical()
		w.index()
		m.Workloads[name] = w
	}
	if _, err := Encode(m); err != nil {
		return nil, err
	}
	return m, nil
}

func sortStrings(s []string) { sort.Strings(s) }
