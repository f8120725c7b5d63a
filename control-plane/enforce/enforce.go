// Package enforce is the lateral-movement pipeline after scoring:
// observation → detector → Incident → guard rails → Decision → a sink that
// applies it (the Kubernetes API server, YAML files for GitOps, or Envoy
// RBAC over xDS). Times come from the observations and from Tick, so a
// replay runs on simulated time and the server on the wall clock.
package enforce

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/detect"
	"github.com/meshward/meshward/models"
)

// Sink applies decisions and keeps them for their lifetime.
type Sink interface {
	// Apply writes a decision (a suppressed one is only audited).
	Apply(ctx context.Context, d decide.Decision) error
	// Tick promotes what is due and removes what expired, as of now.
	Tick(ctx context.Context, now time.Time) error
	// Active is how many quarantines stand (the cap counts them).
	Active() int
	// Holds says whether a decision still stands (not expired, released).
	Holds(id string) bool
	// Standing returns the standing decisions, by id.
	Standing() []decide.Decision
	// Release removes a decision before it expires.
	Release(ctx context.Context, id string) error
}

// Loop feeds observations to a detector and applies the decisions on its
// incidents. It is safe for concurrent use (observations are serialised).
type Loop struct {
	mu        sync.Mutex
	det       *detect.Detector
	guard     *decide.Guard
	sink      Sink
	log       *slog.Logger
	decisions []decide.Decision
	// open are the standing decisions' incidents, by principal, with how
	// many destinations they deny: an incident keeps growing after it
	// opens, and each new destination joins the quarantine.
	open map[string]*opened
}

type opened struct {
	inc      *detect.Incident
	decision decide.Decision
	targets  int
}

// New returns a loop over traffic scored by m.
func New(dcfg detect.Config, rules decide.Rules, m *models.Model, sink Sink, log *slog.Logger) (*Loop, error) {
	det, err := detect.New(dcfg, m)
	if err != nil {
		return nil, err
	}
	g, err := decide.NewGuard(rules)
	if err != nil {
		return nil, err
	}
	return &Loop{det: det, guard: g, sink: sink, log: log, open: map[string]*opened{}}, nil
}

// SetModel restarts detection on a new model (its learned edges); the
// guard rails' memory and the standing quarantines stay.
func (l *Loop) SetModel(dcfg detect.Config, m *models.Model) error {
	det, err := detect.New(dcfg, m)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.det = det
	l.mu.Unlock()
	return nil
}

// Observe feeds one scored request; when it opens an incident the decision
// is made and applied, and returned.
func (l *Loop) Observe(ctx context.Context, o detect.Observation) (*decide.Decision, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	inc := l.det.Observe(o)
	if inc == nil {
		return nil, l.grow(ctx, o.Request.Source)
	}
	d := l.guard.Decide(inc, l.sink.Active(), inc.Opened)
	l.decisions = append(l.decisions, d)
	l.log.Info("incident", "id", inc.ID, "principal", inc.Principal, "signals", inc.Signals,
		"new_edges", len(inc.NewEdges), "first_new_edge", inc.FirstNewEdge, "suppressed", d.Suppressed)
	err := l.sink.Apply(ctx, d)
	if d.Suppressed == "" {
		op := &opened{inc: inc, decision: d, targets: len(d.Deny)}
		// The sink may have folded the decision into a standing quarantine
		// of the same principal (after a restart, say): follow that one.
		for _, s := range l.sink.Standing() {
			if s.Principal == d.Principal {
				op.decision = s
			}
		}
		l.open[inc.Principal] = op
	}
	return &d, err
}

// grow re-applies a standing decision whose incident reached a new
// destination since (the sink folds it into the same quarantine; no new
// decision is counted against the rate limit).
func (l *Loop) grow(ctx context.Context, principal string) error {
	op := l.open[principal]
	if op == nil {
		return nil
	}
	if !l.sink.Holds(op.decision.ID) {
		delete(l.open, principal)
		return nil
	}
	fresh := decide.Decide(op.inc, l.guard.Rules, 0, op.decision.Created)
	if fresh.Suppressed != "" || len(fresh.Deny) <= op.targets {
		return nil
	}
	fresh.ID = op.decision.ID
	op.targets = len(fresh.Deny)
	return l.sink.Apply(ctx, fresh)
}

// Tick passes the time to the sink.
func (l *Loop) Tick(ctx context.Context, now time.Time) error { return l.sink.Tick(ctx, now) }

// Incidents returns every incident opened, in order.
func (l *Loop) Incidents() []*detect.Incident {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*detect.Incident(nil), l.det.Incidents()...)
}

// Decisions returns every decision made, in order.
func (l *Loop) Decisions() []decide.Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]decide.Decision(nil), l.decisions...)
}
