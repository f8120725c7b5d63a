// Package enforce is the lateral-movement pipeline after scoring:
// observation → detector → Incident → guard rails → Decision → a sink that
// applies it (the Kubernetes API server, YAML files for GitOps, or Envoy
// RBAC over xDS). Times come from the observations and from Tick, so a
// replay runs on simulated time and the server on the wall clock.
package enforce

import (
	"context"
	"errors"
	"log/slog"
	"sort"
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

// Rebuilder is a sink that reloads its state from where it writes (the API
// server, the store, the files): a replica taking the lead does so before
// it acts, since the last leader may have written, released or expired.
type Rebuilder interface {
	Rebuild(ctx context.Context) error
}

// Fenced is a sink whose every write first asks a fence (the leader
// election's Check) and does not happen when it answers an error, so a
// replica that lost the lead without knowing it cannot apply.
type Fenced interface {
	SetFence(func(context.Context) error)
}

// Namespaced is a sink that writes in some namespaces only (a Role's): a
// target elsewhere is left out of a decision rather than failing it.
type Namespaced interface {
	Writes(namespace string) bool
}

// Loop feeds observations to a detector and applies the decisions on its
// incidents, holding the guard rails on the time the observations carry
// (the control plane's clock, or a replay's). Decisions a limit holds back
// wait and are applied when it frees; a write that fails is retried with
// backoff. It is safe for concurrent use (observations are serialised).
type Loop struct {
	mu        sync.Mutex
	det       *detect.Detector
	guard     *decide.Guard
	sink      Sink
	log       *slog.Logger
	decisions []decide.Decision
	// open are the incidents whose decisions stand or wait to be written,
	// by principal, with how many destinations they deny: an incident
	// keeps growing after it opens, and each new destination joins the
	// quarantine.
	open     map[string]*opened
	failures int64
	evicted  int64     // by detectors replaced since
	now      time.Time // the latest time seen
}

type opened struct {
	inc      *detect.Incident
	decision decide.Decision
	targets  int
	// applied is false until a write of the decision succeeded; err is the
	// last write's error, retried at next (backoff doubling from
	// RetryFirst up to RetryMax).
	applied bool
	err     error
	next    time.Time
	backoff time.Duration
}

// Retry backoff of a failed write.
const (
	RetryFirst = time.Second
	RetryMax   = time.Minute
)

// maxDecisions bounds the decisions Decisions returns (the oldest go).
const maxDecisions = 10_000

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
// guard rails' memory, the pending decisions and the standing quarantines
// stay.
func (l *Loop) SetModel(dcfg detect.Config, m *models.Model) error {
	det, err := detect.New(dcfg, m)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.evicted += l.det.Evicted()
	l.det = det
	l.mu.Unlock()
	return nil
}

// Observe feeds one scored request, whose TS is when the control plane
// observed it (never a time the record claims); when it opens an incident
// the decision is made and applied, and returned.
func (l *Loop) Observe(ctx context.Context, o detect.Observation) (*decide.Decision, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o.TS.After(l.now) {
		l.now = o.TS
	}
	inc := l.det.Observe(o)
	if inc == nil {
		return nil, l.grow(ctx, o.Request.Source)
	}
	standing := l.sink.Standing()
	for _, op := range l.open {
		if !op.applied {
			standing = append(standing, op.decision)
		}
	}
	// A decision is made now: the latest time the loop was given (a new
	// leader replaying the stream decides on the present, not on when
	// the records it replays arrived).
	d := l.guard.Decide(inc, standing, l.now)
	for _, p := range l.guard.TakeDropped() {
		l.det.Forget(p)
	}
	l.log.Info("incident", "id", inc.ID, "principal", inc.Principal, "signals", inc.Signals,
		"new_edges", len(inc.NewEdges), "first_new_edge", inc.FirstNewEdge, "suppressed", d.Suppressed)
	return &d, l.decide(ctx, inc, d, l.now)
}

// decide records a decision and, unless suppressed, writes it.
func (l *Loop) decide(ctx context.Context, inc *detect.Incident, d decide.Decision, now time.Time) error {
	d = l.fit(d)
	l.decisions = append(l.decisions, d)
	if len(l.decisions) > maxDecisions {
		l.decisions = l.decisions[len(l.decisions)-maxDecisions:]
	}
	if d.Suppressed != "" {
		// Audited; a held decision waits in the guard.
		return l.sink.Apply(ctx, d)
	}
	op := &opened{inc: inc, decision: d, targets: len(d.Deny)}
	l.open[inc.Principal] = op
	if len(d.Deny) == 0 {
		// Nothing meshward may write yet; the incident stays open, and
		// a destination it may fence joins when the incident reaches one.
		l.log.Warn("quarantine decision", "action", "waiting", "decision", d.ID, "principal", d.Principal, "skipped", d.Skipped)
		return nil
	}
	return l.write(ctx, op, now)
}

// fit leaves out of a decision the targets the sink may not write.
func (l *Loop) fit(d decide.Decision) decide.Decision {
	ns, ok := l.sink.(Namespaced)
	if !ok {
		return d
	}
	keep := d.Deny[:0:0]
	for _, t := range d.Deny {
		if ns.Writes(t.Namespace) {
			keep = append(keep, t)
		} else {
			d.Skipped = append(d.Skipped, t.Workload+": meshward does not write in namespace "+t.Namespace)
		}
	}
	d.Deny = keep
	return d
}

// write applies an opened decision; a failure is kept, to be retried.
func (l *Loop) write(ctx context.Context, op *opened, now time.Time) error {
	err := l.sink.Apply(ctx, op.decision)
	if err == nil {
		op.applied, op.err, op.backoff = true, nil, 0
		// The sink may have folded the decision into a standing
		// quarantine of the same principal (after a restart, say):
		// follow that one.
		for _, s := range l.sink.Standing() {
			if s.Principal == op.decision.Principal {
				op.decision.ID, op.decision.Created = s.ID, s.Created
			}
		}
		return nil
	}
	l.failures++
	op.err = err
	if op.backoff == 0 {
		op.backoff = RetryFirst
	} else {
		op.backoff = min(2*op.backoff, RetryMax)
	}
	op.next = now.Add(op.backoff)
	return err
}

// grow re-applies a standing decision whose incident reached a new
// destination since (the sink folds it into the same quarantine; no new
// decision is counted against the rate limit).
func (l *Loop) grow(ctx context.Context, principal string) error {
	op := l.open[principal]
	if op == nil {
		return nil
	}
	if op.applied && !l.sink.Holds(op.decision.ID) {
		// Released or expired: what the principal does next is judged
		// afresh.
		delete(l.open, principal)
		l.det.Forget(principal)
		return nil
	}
	fresh := l.fit(decide.Decide(op.inc, l.guard.Rules, 0, op.decision.Created))
	if fresh.Suppressed != "" || len(fresh.Deny) <= op.targets {
		return nil
	}
	fresh.ID, fresh.Expires = op.decision.ID, op.decision.Expires
	op.decision, op.targets = fresh, len(fresh.Deny)
	if !op.applied && op.err != nil {
		return nil // the retry writes it whole
	}
	return l.write(ctx, op, l.now)
}

// Tick passes the time to the sink, lets through the decisions a limit
// held back that now fit, retries the writes that failed and are due, and
// forgets the quarantines that ended.
func (l *Loop) Tick(ctx context.Context, now time.Time) error {
	err := l.sink.Tick(ctx, now)
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.now) {
		l.now = now
	}
	errs := []error{err}
	for p, op := range l.open {
		if op.applied && !l.sink.Holds(op.decision.ID) {
			delete(l.open, p)
			l.det.Forget(p)
		}
	}
	// What stands, and what waits to be written, counts against the caps.
	standing := l.sink.Standing()
	for _, op := range l.open {
		if !op.applied {
			standing = append(standing, op.decision)
		}
	}
	held := map[string]*detect.Incident{}
	for _, inc := range l.guard.Pending() {
		held[inc.Principal] = inc
	}
	for _, d := range l.guard.Reconsider(standing, now) {
		l.log.Info("quarantine decision", "action", "reconsidered", "decision", d.ID, "principal", d.Principal)
		errs = append(errs, l.decide(ctx, held[d.Principal], d, now))
	}
	for _, p := range l.guard.TakeDropped() {
		// Dropped from the waiting line: a later fan-out opens anew.
		l.det.Forget(p)
	}
	for _, op := range l.open {
		if op.applied || op.err == nil || now.Before(op.next) {
			continue
		}
		errs = append(errs, l.write(ctx, op, now))
	}
	return errors.Join(errs...)
}

// Pending returns the decisions that stand but are not (wholly) written
// yet, each with the error of its last write.
func (l *Loop) Pending() []decide.Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []decide.Decision
	for _, op := range l.open {
		if op.applied || op.err == nil {
			continue
		}
		d := op.decision
		d.Pending = op.err.Error()
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Failures is how many writes failed (each is retried).
func (l *Loop) Failures() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failures
}

// Held is how many decisions wait for a limit to free, and Dropped how
// many waiting ones the bound on them dropped.
func (l *Loop) Held() (held int, dropped int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.guard.Pending()), l.guard.Dropped()
}

// Evicted is how many principals the detector forgot for its bound.
func (l *Loop) Evicted() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.evicted + l.det.Evicted()
}

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
