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

// Keeper keeps the standing decisions where every replica and the next
// run can read them (the store, in Redis). Envoy keeps no state meshward
// could list, unlike the API server, so the RBAC sink needs one.
type Keeper interface {
	Save(ctx context.Context, d decide.Decision) error
	Delete(ctx context.Context, id string) error
	Load(ctx context.Context) (map[string]decide.Decision, error)
}

// RBAC is a sink for meshes without Istio: the standing decisions become
// one Envoy RBAC filter configuration per target workload (shadow rules
// for dry runs, rules once enforced), published over xDS on every change.
// With a Keeper, every change is kept there and Sync makes this sink
// match it: a restarted control plane neither forgets nor duplicates, and
// replicas that do not lead publish the leader's decisions to their own
// Envoys. Without one, the state lives in memory.
type RBAC struct {
	pub    RBACPublisher
	rules  decide.Rules
	log    *slog.Logger
	keeper Keeper
	mu     sync.Mutex
	state  map[string]decide.Decision
	sent   map[string]bool // workloads that have rules published
	fence  func(context.Context) error
}

// SetFence makes every change (apply, promote, release, expiry) ask f
// first and not happen when it answers an error (call before use).
func (r *RBAC) SetFence(f func(context.Context) error) {
	r.mu.Lock()
	r.fence = f
	r.mu.Unlock()
}

// fenced asks the fence, if any (r.mu held).
func (r *RBAC) fenced(ctx context.Context) error {
	if r.fence == nil {
		return nil
	}
	if err := r.fence(ctx); err != nil {
		return fmt.Errorf("not written: %w", err)
	}
	return nil
}

// Rebuild is Sync: the kept decisions replace what this sink holds.
func (r *RBAC) Rebuild(ctx context.Context) error { return r.Sync(ctx) }

// NewRBAC returns a sink publishing through pub.
func NewRBAC(pub RBACPublisher, rules decide.Rules, log *slog.Logger) *RBAC {
	return &RBAC{pub: pub, rules: rules, log: log, state: map[string]decide.Decision{}, sent: map[string]bool{}}
}

// Keep makes k the place the standing decisions are kept and read back
// from (call before the first Apply, then Sync).
func (r *RBAC) Keep(k Keeper) { r.keeper = k }

// Sync replaces the standing decisions with the kept ones and publishes
// when they differ. When the keeper cannot be read, what is published
// stays in force and the error is returned.
func (r *RBAC) Sync(ctx context.Context) error {
	if r.keeper == nil {
		return nil
	}
	kept, err := r.keeper.Load(ctx)
	if err != nil {
		return fmt.Errorf("reading the kept quarantines: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if sameDecisions(kept, r.state) {
		return nil
	}
	r.state = kept
	return r.publish()
}

func sameDecisions(a, b map[string]decide.Decision) bool {
	if len(a) != len(b) {
		return false
	}
	for id, d := range a {
		o, ok := b[id]
		if !ok || o.Mode != d.Mode || !o.Expires.Equal(d.Expires) || len(o.Deny) != len(d.Deny) {
			return false
		}
		for i := range d.Deny {
			if o.Deny[i] != d.Deny[i] {
				return false
			}
		}
	}
	return true
}

// save and forget write through to the keeper, if any.
func (r *RBAC) save(ctx context.Context, d decide.Decision) error {
	if r.keeper == nil {
		return nil
	}
	return r.keeper.Save(ctx, d)
}

func (r *RBAC) forget(ctx context.Context, id string) error {
	if r.keeper == nil {
		return nil
	}
	return r.keeper.Delete(ctx, id)
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
func (r *RBAC) Apply(ctx context.Context, d decide.Decision) error {
	if d.Suppressed != "" {
		r.log.Info("quarantine decision", "action", "suppressed", "decision", d.ID, "principal", d.Principal, "suppressed", d.Suppressed)
		return nil
	}
	if d.Namespace == "" {
		return fmt.Errorf("decision %s: %q is not a SPIFFE principal; RBAC matches mTLS principals", d.ID, d.Principal)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fenced(ctx); err != nil {
		return err
	}
	for _, have := range r.state {
		if have.Principal == d.Principal {
			d = decide.Merge(have, d)
			break
		}
	}
	if err := r.save(ctx, d); err != nil {
		return fmt.Errorf("decision %s: keeping it: %w", d.ID, err)
	}
	r.state[d.ID] = d
	r.log.Info("quarantine decision", "action", "quarantine", "target", "envoy-rbac", "decision", d.ID, "principal", d.Principal, "mode", string(d.Mode), "targets", len(d.Deny))
	return r.publish()
}

// Release removes a decision's rules.
func (r *RBAC) Release(ctx context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.state[id]; !ok {
		return fmt.Errorf("no such quarantine: %s", id)
	}
	if err := r.fenced(ctx); err != nil {
		return err
	}
	if err := r.forget(ctx, id); err != nil {
		return fmt.Errorf("releasing %s: %w", id, err)
	}
	delete(r.state, id)
	r.log.Info("quarantine decision", "action", "release", "target", "envoy-rbac", "decision", id)
	return r.publish()
}

// Tick promotes the dry runs that are due and removes what expired.
func (r *RBAC) Tick(ctx context.Context, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	var errs []error
	due := false
	for _, d := range r.state {
		at, ok := decide.Promotion(d, r.rules)
		due = due || !now.Before(d.Expires) || ok && !now.Before(at)
	}
	if !due {
		return nil
	}
	if err := r.fenced(ctx); err != nil {
		return err
	}
	for id, d := range r.state {
		if !now.Before(d.Expires) {
			if err := r.forget(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("expiring %s: %w", id, err))
				continue
			}
			delete(r.state, id)
			r.log.Info("quarantine decision", "action", "expire", "target", "envoy-rbac", "decision", id)
			changed = true
		} else if at, ok := decide.Promotion(d, r.rules); ok && !now.Before(at) {
			d.Mode = decide.Enforce
			if err := r.save(ctx, d); err != nil {
				errs = append(errs, fmt.Errorf("promoting %s: %w", id, err))
				continue
			}
			r.state[id] = d
			r.log.Info("quarantine decision", "action", "promote", "target", "envoy-rbac", "decision", id)
			changed = true
		}
	}
	if changed {
		errs = append(errs, r.publish())
	}
	return errors.Join(errs...)
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
