package enforce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/policy"
)

// RBACPublisher delivers a workload's RBAC rules to its sidecars (the
// control plane's ADS server); nil removes them.
type RBACPublisher interface {
	SetRBAC(group string, f *rbacfilterv3.RBAC) error
}

// RBAC is a sink for meshes without Istio: the standing decisions become
// one Envoy RBAC filter configuration per target workload (shadow rules
// for dry runs, rules once enforced), published over xDS on every change.
// Its state lives in memory: a restarted control plane starts empty.
type RBAC struct {
	pub   RBACPublisher
	rules decide.Rules
	log   *slog.Logger
	mu    sync.Mutex
	state map[string]decide.Decision
	sent  map[string]bool // workloads that have rules published
}

// NewRBAC returns a sink publishing through pub.
func NewRBAC(pub RBACPublisher, rules decide.Rules, log *slog.Logger) *RBAC {
	return &RBAC{pub: pub, rules: rules, log: log, state: map[string]decide.Decision{}, sent: map[string]bool{}}
}

// publish recomputes every workload's rules and sends them; workloads that
// no longer have any get an empty configuration.
func (r *RBAC) publish() error {
	per, err := policy.RBACFor(sortedDecisions(r.state))
	if err != nil {
		return err
	}
	var errs []error
	for w, f := range per {
		errs = append(errs, r.pub.SetRBAC(w, f))
	}
	for w := range r.sent {
		if per[w] == nil {
			errs = append(errs, r.pub.SetRBAC(w, nil))
			delete(r.sent, w)
		}
	}
	for w := range per {
		r.sent[w] = true
	}
	return errors.Join(errs...)
}

// Apply adds a decision (merged with a standing one about the same
// principal) and publishes.
func (r *RBAC) Apply(_ context.Context, d decide.Decision) error {
	if d.Suppressed != "" {
		r.log.Info("quarantine decision", "action", "suppressed", "decision", d.ID, "principal", d.Principal, "suppressed", d.Suppressed)
		return nil
	}
	if d.Namespace == "" {
		return fmt.Errorf("decision %s: %q is not a SPIFFE principal; RBAC matches mTLS principals", d.ID, d.Principal)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, have := range r.state {
		if have.Principal == d.Principal {
			d = decide.Merge(have, d)
			break
		}
	}
	r.state[d.ID] = d
	r.log.Info("quarantine decision", "action", "quarantine", "target", "envoy-rbac", "decision", d.ID, "principal", d.Principal, "mode", string(d.Mode), "targets", len(d.Deny))
	return r.publish()
}

// Release removes a decision's rules.
func (r *RBAC) Release(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.state[id]; !ok {
		return fmt.Errorf("no such quarantine: %s", id)
	}
	delete(r.state, id)
	r.log.Info("quarantine decision", "action", "release", "target", "envoy-rbac", "decision", id)
	return r.publish()
}

// Tick promotes the dry runs that are due and removes what expired.
func (r *RBAC) Tick(_ context.Context, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	for id, d := range r.state {
		if !now.Before(d.Expires) {
			delete(r.state, id)
			r.log.Info("quarantine decision", "action", "expire", "target", "envoy-rbac", "decision", id)
			changed = true
		} else if at, ok := decide.Promotion(d, r.rules); ok && !now.Before(at) {
			d.Mode = decide.Enforce
			r.state[id] = d
			r.log.Info("quarantine decision", "action", "promote", "target", "envoy-rbac", "decision", id)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return r.publish()
}

// Active is how many decisions stand.
func (r *RBAC) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.state)
}

// Standing returns the standing decisions, by id.
func (r *RBAC) Standing() []decide.Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return sortedDecisions(r.state)
}

// Holds says whether a decision stands.
func (r *RBAC) Holds(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.state[id]
	return ok
}
