// Package detect watches scored traffic per source principal and opens an
// Incident when a workload starts moving laterally: calling destinations it
// never called (new edges), fanning out over many of them within a short
// window or, slowly, over a long horizon, drawing bursts of 401/403/404
// answers, or a streak of high scores. A single new dependency used at a
// steady rate with ordinary statuses is a release, not an attack: it is
// noted but opens nothing.
//
// Times are the observer's: the control plane's clock when it received a
// record (or a replay's simulated clock), never a time a record claims. The
// state kept per principal is bounded (Config's Max* fields); what a bound
// drops is counted (Evicted).
package detect

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/lateral"
	"github.com/meshward/meshward/models"
)

// Config is everything the detector takes. Defaults in DefaultConfig.
type Config struct {
	// Window is how far back signals are counted.
	Window time.Duration
	// NewDestinations opens an incident when a source reaches this many
	// destinations it never called within Window.
	NewDestinations int
	// DeniedBurst is how many 401/403/404 answers within Window, together
	// with at least one new destination, open an incident.
	DeniedBurst int
	// FlaggedStreak is how many consecutive flagged requests on edges the
	// source already had, together with at least one new destination, open
	// an incident.
	FlaggedStreak int
	// MaxEvidence bounds the requests an incident keeps as evidence.
	MaxEvidence int
	// Horizon is how long the new destinations a source reaches are
	// remembered, so a slow fan-out (one new destination every few
	// minutes) adds up.
	Horizon time.Duration
	// ReleaseRate is how many new destinations per hour an ordinary
	// source reaches (releases adding dependencies), for a source calling
	// up to ten destinations; a source calling more is expected to reach
	// proportionally more. A count over Horizon that a Poisson law of that
	// rate makes less likely than SlowPValue opens an incident. New
	// destinations reached with flagged requests or 401/403/404 answers
	// count whole, the others half.
	ReleaseRate float64
	SlowPValue  float64
	// MaxSources bounds the principals followed; past it the least
	// recently seen principal without an incident is forgotten first
	// (then the least recently seen at all).
	MaxSources int
	// MaxNewDestinations bounds the new destinations remembered per
	// principal over Horizon (more add nothing: far past any threshold),
	// and MaxNewEdges the new edges an incident lists.
	MaxNewDestinations int
	MaxNewEdges        int
	// MaxIncidents bounds the incidents Incidents returns (the oldest go).
	MaxIncidents int
}

// DefaultConfig returns the defaults, in one place.
func DefaultConfig() Config {
	return Config{Window: time.Minute, NewDestinations: 2, DeniedBurst: 3, FlaggedStreak: 3, MaxEvidence: 20,
		Horizon: time.Hour, ReleaseRate: 0.5, SlowPValue: 1e-3,
		MaxSources: 10_000, MaxNewDestinations: 64, MaxNewEdges: 64, MaxIncidents: 10_000}
}

// ErrConfig is wrapped by every problem Validate reports.
var ErrConfig = errors.New("lateral-movement detector")

// Validate reports every problem with the configuration, naming the flag
// of meshward serve that sets a value, else the field.
func (c Config) Validate() error {
	var errs []error
	if c.Window <= 0 {
		errs = append(errs, fmt.Errorf("%w: Window %v must be positive", ErrConfig, c.Window))
	}
	if c.NewDestinations < 2 {
		errs = append(errs, fmt.Errorf("%w: NewDestinations %d must be at least 2 (one new dependency is a release)", ErrConfig, c.NewDestinations))
	}
	if c.DeniedBurst < 1 || c.FlaggedStreak < 1 || c.MaxEvidence < 1 {
		errs = append(errs, fmt.Errorf("%w: DeniedBurst %d, FlaggedStreak %d and MaxEvidence %d must be positive", ErrConfig, c.DeniedBurst, c.FlaggedStreak, c.MaxEvidence))
	}
	if c.Horizon < c.Window {
		errs = append(errs, fmt.Errorf("%w: -detect-horizon %v must be at least the Window (%v)", ErrConfig, c.Horizon, c.Window))
	}
	if !(c.ReleaseRate > 0) || !(c.SlowPValue > 0 && c.SlowPValue < 0.5) {
		errs = append(errs, fmt.Errorf("%w: ReleaseRate %v must be positive and SlowPValue %v in (0,0.5)", ErrConfig, c.ReleaseRate, c.SlowPValue))
	}
	if c.MaxSources < 1 {
		errs = append(errs, fmt.Errorf("%w: -detect-max-sources %d must be positive", ErrConfig, c.MaxSources))
	}
	if c.MaxNewDestinations < 2 || c.MaxNewEdges < 1 || c.MaxIncidents < 1 {
		errs = append(errs, fmt.Errorf("%w: MaxNewEdges %d and MaxIncidents %d must be positive, MaxNewDestinations %d at least 2", ErrConfig, c.MaxNewEdges, c.MaxIncidents, c.MaxNewDestinations))
	}
	return errors.Join(errs...)
}

// Observation is one scored request as the detector sees it.
type Observation struct {
	TS      time.Time
	Request *models.Request
	Score   float64
	Flagged bool
	Reasons []string
	Pos     string
}

// The values the detector hands on (lateral.Incident and what it carries),
// named here where they are made.
type (
	Edge     = lateral.Edge
	Evidence = lateral.Evidence
	Incident = lateral.Incident
)

// Detector turns observations into incidents. It is not safe for concurrent
// use; feed it in time order.
type Detector struct {
	cfg     Config
	known   map[string]map[string]bool // source → destinations learned
	sources map[string]*state
	open    []*Incident
	evicted int64
}

type state struct {
	newEdges map[string]*Edge // key: destination + " " + method + " " + route
	recent   []event          // within Window
	// slow are the new destinations reached within Horizon, with when
	// each was first reached and whether it drew flagged requests or
	// denials (evidence).
	slow     map[string]*slowDst
	streak   int
	incident *Incident
	first    time.Time
	last     time.Time // last observation, for eviction
}

type slowDst struct {
	first    time.Time
	evidence bool
}

type event struct {
	ts      time.Time
	newDst  string // "" when the destination is known
	denied  bool
	flagged bool
}

// maxRecent bounds the events of one principal's short window: a source
// sending more within Window is bursting, and the newest events say so.
const maxRecent = 4096

// New returns a detector for traffic scored by m: the model's sections say
// which destinations each source was learned calling.
func New(cfg Config, m *models.Model) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Detector{cfg: cfg, known: map[string]map[string]bool{}, sources: map[string]*state{}}
	for name, w := range m.Workloads {
		if name == models.GlobalWorkload {
			continue
		}
		for _, s := range w.Sources {
			if d.known[s] == nil {
				d.known[s] = map[string]bool{}
			}
			d.known[s][name] = true
		}
	}
	return d, nil
}

// Evicted is how many principals' states were dropped for MaxSources.
func (d *Detector) Evicted() int64 { return d.evicted }

// Forget drops what the detector holds about a principal: its quarantine
// ended (expired or released), and what it does next must be able to open
// a new incident.
func (d *Detector) Forget(principal string) { delete(d.sources, principal) }

// source returns a principal's state, making room for a new one when the
// bound is reached.
func (d *Detector) source(p string, now time.Time) *state {
	if st := d.sources[p]; st != nil {
		return st
	}
	if len(d.sources) >= d.cfg.MaxSources {
		d.evict()
	}
	st := &state{newEdges: map[string]*Edge{}, slow: map[string]*slowDst{}, last: now}
	d.sources[p] = st
	return st
}

// evict forgets the least recently seen principal without an open
// incident, or the least recently seen of all when every one has one.
func (d *Detector) evict() {
	var victim, victimAny string
	var at, atAny time.Time
	for p, st := range d.sources {
		if victimAny == "" || st.last.Before(atAny) {
			victimAny, atAny = p, st.last
		}
		if st.incident == nil && (victim == "" || st.last.Before(at)) {
			victim, at = p, st.last
		}
	}
	if victim == "" {
		victim = victimAny
	}
	delete(d.sources, victim)
	d.evicted++
}

// Observe feeds one scored request. It returns the incident it opened, or nil.
func (d *Detector) Observe(o Observation) *Incident {
	r := o.Request
	st := d.source(r.Source, o.TS)
	if o.TS.After(st.last) {
		st.last = o.TS
	}
	ev := event{ts: o.TS, flagged: o.Flagged, denied: r.Status == 401 || r.Status == 403 || r.Status == 404}
	if !d.known[r.Source][r.Destination] {
		ev.newDst = r.Destination
		route := models.Template(r.Path)
		key := r.Destination + " " + r.Method + " " + route
		e := st.newEdges[key]
		if e == nil && len(st.newEdges) < d.cfg.MaxNewEdges {
			e = &Edge{Destination: r.Destination, Method: r.Method, Route: route, First: o.TS}
			st.newEdges[key] = e
		}
		if st.first.IsZero() {
			st.first = o.TS
		}
		if e != nil {
			e.Count++
			e.Last = o.TS
			if r.Status != 0 && !containsInt(e.Statuses, r.Status) && len(e.Statuses) < 8 {
				e.Statuses = append(e.Statuses, r.Status)
			}
		}
		sd := st.slow[r.Destination]
		if sd == nil && len(st.slow) < d.cfg.MaxNewDestinations {
			sd = &slowDst{first: o.TS}
			st.slow[r.Destination] = sd
		}
		if sd != nil && (ev.flagged || ev.denied) {
			sd.evidence = true
		}
	}
	// The streak counts flagged requests on edges the source already had:
	// a request on a new edge is flagged for being new, which the new-edge
	// signals count already.
	switch {
	case ev.newDst != "":
	case o.Flagged:
		st.streak++
	default:
		st.streak = 0
	}
	// Slide the window and the horizon.
	st.recent = append(st.recent, ev)
	cut := 0
	for cut < len(st.recent) && (o.TS.Sub(st.recent[cut].ts) > d.cfg.Window || len(st.recent)-cut > maxRecent) {
		cut++
	}
	st.recent = st.recent[cut:]
	for dst, sd := range st.slow {
		if o.TS.Sub(sd.first) > d.cfg.Horizon {
			delete(st.slow, dst)
		}
	}

	if inc := st.incident; inc != nil {
		d.addEvidence(inc, o, ev)
		inc.NewEdges = sortedEdges(st.newEdges)
		return nil
	}
	newDsts := map[string]bool{}
	var denied, flagged int
	for _, e := range st.recent {
		if e.newDst != "" {
			newDsts[e.newDst] = true
		}
		if e.denied {
			denied++
		}
		if e.flagged {
			flagged++
		}
	}
	var signals []string
	if len(newDsts) >= d.cfg.NewDestinations {
		signals = append(signals, fmt.Sprintf("new_destinations=%d", len(newDsts)))
	}
	if len(newDsts) >= 1 && denied >= d.cfg.DeniedBurst {
		signals = append(signals, fmt.Sprintf("denied_burst=%d", denied))
	}
	if len(newDsts) >= 1 && st.streak >= d.cfg.FlaggedStreak {
		signals = append(signals, fmt.Sprintf("flagged_streak=%d", st.streak))
	}
	if n, need := d.slowCount(st), d.SlowThreshold(r.Source); n >= need {
		signals = append(signals, fmt.Sprintf("slow_new_destinations=%g/%v (need %g)", n, d.cfg.Horizon, need))
	}
	if len(signals) == 0 {
		return nil
	}
	if st.first.IsZero() {
		st.first = o.TS
	}
	inc := &Incident{
		ID:           incidentID(r.Source, st.first),
		Principal:    r.Source,
		Opened:       o.TS,
		FirstNewEdge: st.first,
		Signals:      signals,
		NewEdges:     sortedEdges(st.newEdges),
	}
	for dst := range d.known[r.Source] {
		inc.KnownDestinations = append(inc.KnownDestinations, dst)
	}
	sort.Strings(inc.KnownDestinations)
	for _, e := range st.recent {
		if e.denied {
			inc.Denied++
		}
		if e.flagged {
			inc.Flagged++
		}
	}
	d.addEvidence(inc, o, event{})
	st.incident = inc
	d.open = append(d.open, inc)
	if len(d.open) > d.cfg.MaxIncidents {
		d.open = d.open[len(d.open)-d.cfg.MaxIncidents:]
	}
	return inc
}

// slowCount weighs the new destinations a source reached within Horizon:
// whole when a request to it was flagged or denied, half otherwise.
func (d *Detector) slowCount(st *state) float64 {
	n := 0.0
	for _, sd := range st.slow {
		if sd.evidence {
			n++
		} else {
			n += 0.5
		}
	}
	return n
}

// SlowThreshold is the weighted count of new destinations within Horizon
// that opens an incident for a principal: the least n a Poisson law of the
// principal's expected rate (ReleaseRate per hour, growing with the
// destinations it was learned calling) reaches with a probability under
// SlowPValue.
func (d *Detector) SlowThreshold(principal string) float64 {
	lambda := d.cfg.ReleaseRate * d.cfg.Horizon.Hours() * (1 + float64(len(d.known[principal]))/10)
	// P(N ≥ n) = 1 − Σ_{k<n} e^−λ λ^k / k!
	term := math.Exp(-lambda)
	cdf := 0.0
	for n := 0; n < 1000; n++ {
		cdf += term
		if 1-cdf < d.cfg.SlowPValue {
			// Two new destinations are never slow lateral movement on
			// their own: a release can add two dependencies.
			return math.Max(float64(n+1), 3)
		}
		term *= lambda / float64(n+1)
	}
	return 1000
}

func (d *Detector) addEvidence(inc *Incident, o Observation, ev event) {
	if ev.denied {
		inc.Denied++
	}
	if ev.flagged {
		inc.Flagged++
	}
	if len(inc.Evidence) >= d.cfg.MaxEvidence {
		return
	}
	target := o.Request.Method + " " + o.Request.Path
	if o.Request.Query != "" {
		target += "?" + o.Request.Query
	}
	inc.Evidence = append(inc.Evidence, Evidence{TS: o.TS, Destination: o.Request.Destination, Request: target,
		Status: o.Request.Status, Score: o.Score, Reasons: o.Reasons, Pos: o.Pos})
}

// Incidents returns every incident opened so far, in the order opened.
func (d *Detector) Incidents() []*Incident { return d.open }

func sortedEdges(m map[string]*Edge) []Edge {
	out := make([]Edge, 0, len(m))
	for _, e := range m {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].First.Equal(out[j].First) {
			return out[i].First.Before(out[j].First)
		}
		return out[i].Destination+out[i].Route < out[j].Destination+out[j].Route
	})
	return out
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// incidentID names an incident stably from its principal and first new edge.
func incidentID(principal string, first time.Time) string {
	h := uint64(14695981039346656037)
	for _, c := range []byte(principal + first.UTC().Format(time.RFC3339Nano)) {
		h ^= uint64(c)
		h *= 1099511628211
	}
	name := principal
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return fmt.Sprintf("%s-%08x", sanitize(name), uint32(h))
}

// sanitize keeps a string usable in a Kubernetes name.
func sanitize(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
		if b.Len() >= 40 {
			break
		}
	}
	out := strings.Trim(b.String(), "-")
	if out == "" {
		return "source"
	}
	return out
}
