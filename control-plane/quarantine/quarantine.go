// Package quarantine applies decisions to a Kubernetes API server as Istio
// AuthorizationPolicies and keeps them for their lifetime: server-side apply
// with one field manager, objects owned by label (a foreign object of the
// same name is an error, never overwritten), promotion from dry run to
// enforcement, expiry, manual release, and a rebuild of its state from the
// objects it owns, so a restart neither duplicates nor forgets a
// quarantine. Every decision is audited twice: a JSON log line and a
// Kubernetes Event on the policy object (on the source's ServiceAccount when
// no policy is written).
//
// Times come from the caller (Apply takes the decision's, Tick a now), so
// replays run on simulated time and the server on the wall clock.
package quarantine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/policy"
)

// FieldManager is the server-side apply field manager of everything
// meshward writes.
const FieldManager = "meshward"

// ErrForeign is returned when an object meshward would write exists and is
// not meshward's.
var ErrForeign = errors.New("an object of that name exists and is not managed by meshward")

// ErrNamespace is returned for a target outside the namespaces meshward
// may write in.
var ErrNamespace = errors.New("the namespace is not one meshward writes in")

// ErrUnknown is returned for a decision id the applier does not hold.
var ErrUnknown = errors.New("no such quarantine")

// Config is everything the applier takes.
type Config struct {
	// Rules are decide's rules: Enforce and PromoteAfter say when a dry
	// run is promoted.
	Rules decide.Rules
	// Instance names this replica in Events (reportingInstance).
	Instance string
	// Namespaces are the namespaces meshward may write policies in (a
	// namespaced Role grants it no more); empty: every namespace (a
	// ClusterRole). A decision's target elsewhere is an error.
	Namespaces []string
}

// Ref names one policy object.
type Ref struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Target    string `json:"target"`
}

// Quarantine is one standing decision and the objects that carry it.
type Quarantine struct {
	Decision decide.Decision `json:"decision"`
	Policies []Ref           `json:"policies"`
}

// Applier writes and keeps quarantines. It is safe for concurrent use.
type Applier struct {
	cfg   Config
	istio istioclient.Interface
	kube  kubernetes.Interface
	log   *slog.Logger
	// op serialises the operations that write (apply, promote, remove),
	// so a release never races an apply of the same quarantine.
	op    sync.Mutex
	mu    sync.Mutex
	state map[string]*Quarantine // by decision id
	uids  map[Ref]types.UID      // of the objects written, for Events
	seq   atomic.Int64           // keeps Event names unique
	fence atomic.Pointer[func(context.Context) error]
}

// SetFence makes every write (apply, promote, release, expiry) ask f
// first and not happen when it answers an error: the leader election's
// check that this replica still leads.
func (a *Applier) SetFence(f func(context.Context) error) { a.fence.Store(&f) }

// fenced asks the fence, if any.
func (a *Applier) fenced(ctx context.Context) error {
	if f := a.fence.Load(); f != nil && *f != nil {
		if err := (*f)(ctx); err != nil {
			return fmt.Errorf("not written: %w", err)
		}
	}
	return nil
}

// New returns an applier; Rebuild loads what the API server holds.
func New(cfg Config, istio istioclient.Interface, kube kubernetes.Interface, log *slog.Logger) (*Applier, error) {
	if err := cfg.Rules.Validate(); err != nil {
		return nil, err
	}
	if istio == nil || kube == nil {
		return nil, errors.New("quarantine: an Istio and a Kubernetes client are required")
	}
	if cfg.Instance == "" {
		cfg.Instance = "meshward"
	}
	return &Applier{cfg: cfg, istio: istio, kube: kube, log: log, state: map[string]*Quarantine{}, uids: map[Ref]types.UID{}}, nil
}

// Rebuild replaces the applier's state with the quarantines the API server
// holds: every AuthorizationPolicy labelled as meshward's, in every
// namespace, grouped by decision. An object labelled as meshward's that
// does not carry a decision (hand-made, or edited) is skipped with a
// warning naming it: it is neither adopted nor deleted.
func (a *Applier) Rebuild(ctx context.Context) error {
	var items []*securityv1.AuthorizationPolicy
	namespaces := a.cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	for _, ns := range namespaces {
		list, err := a.istio.SecurityV1().AuthorizationPolicies(ns).List(ctx, metav1.ListOptions{LabelSelector: policy.OwnedSelector})
		if err != nil {
			where := "every namespace"
			if ns != "" {
				where = "namespace " + ns
			}
			return fmt.Errorf("listing meshward's AuthorizationPolicies in %s: %w", where, err)
		}
		items = append(items, list.Items...)
	}
	state := map[string]*Quarantine{}
	skipped := 0
	for _, ap := range items {
		d, err := policy.FromIstio(ap)
		if err != nil {
			a.log.Warn("skipping an object labelled as meshward's", "err", err)
			skipped++
			continue
		}
		ref := Ref{Namespace: ap.Namespace, Name: ap.Name, Target: d.Deny[0].Workload}
		if have := state[d.ID]; have != nil {
			mode := have.Decision.Mode
			have.Decision = decide.Merge(have.Decision, d)
			have.Policies = append(have.Policies, ref)
			// Promotion stopped half way (a crash): stay a dry run, so the
			// next Tick promotes every object.
			if mode == decide.DryRun || d.Mode == decide.DryRun {
				have.Decision.Mode = decide.DryRun
			}
			continue
		}
		state[d.ID] = &Quarantine{Decision: d, Policies: []Ref{ref}}
	}
	for _, q := range state {
		sortQuarantine(q)
	}
	a.mu.Lock()
	a.state = state
	a.mu.Unlock()
	a.log.Info("quarantine state rebuilt from the API server", "quarantines", len(state), "policies", len(items)-skipped, "skipped", skipped)
	return nil
}

func sortQuarantine(q *Quarantine) {
	sort.Slice(q.Decision.Deny, func(i, j int) bool { return q.Decision.Deny[i].Workload < q.Decision.Deny[j].Workload })
	sort.Slice(q.Policies, func(i, j int) bool { return q.Policies[i].Target < q.Policies[j].Target })
}

// Writes says whether the applier may write policies in a namespace
// (Config.Namespaces); enforce leaves other targets out of a decision.
func (a *Applier) Writes(namespace string) bool {
	return len(a.cfg.Namespaces) == 0 || slices.Contains(a.cfg.Namespaces, namespace)
}

// Active returns how many quarantines stand (decide's cap counts them).
func (a *Applier) Active() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.state)
}

// List returns the standing quarantines, by id.
func (a *Applier) List() []Quarantine {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Quarantine, 0, len(a.state))
	for _, q := range a.state {
		out = append(out, clone(q))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Decision.ID < out[j].Decision.ID })
	return out
}

// Standing returns the standing decisions, by id.
func (a *Applier) Standing() []decide.Decision {
	var out []decide.Decision
	for _, q := range a.List() {
		out = append(out, q.Decision)
	}
	return out
}

// Holds says whether a quarantine stands.
func (a *Applier) Holds(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state[id] != nil
}

// Get returns one quarantine.
func (a *Applier) Get(id string) (Quarantine, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	q, ok := a.state[id]
	if !ok {
		return Quarantine{}, false
	}
	return clone(q), true
}

func clone(q *Quarantine) Quarantine {
	c := *q
	c.Decision.Deny = append([]decide.Target(nil), q.Decision.Deny...)
	c.Policies = append([]Ref(nil), q.Policies...)
	return c
}

// Apply writes a decision. A suppressed decision writes nothing and is
// audited. A decision about a principal already in quarantine joins it
// (same id and objects, the union of the targets), so a new incident
// about the same workload — after a restart, say — never duplicates it.
func (a *Applier) Apply(ctx context.Context, d decide.Decision) error {
	a.op.Lock()
	defer a.op.Unlock()
	if d.Suppressed != "" {
		a.audit(ctx, "suppressed", d, nil, nil)
		return nil
	}
	a.mu.Lock()
	for _, q := range a.state {
		if q.Decision.Principal == d.Principal && q.Decision.ID != d.ID {
			d = decide.Merge(q.Decision, d)
			break
		}
	}
	if q := a.state[d.ID]; q != nil {
		d = decide.Merge(q.Decision, d)
	}
	a.mu.Unlock()
	refs, err := a.write(ctx, d)
	action := "quarantine"
	if err != nil {
		action = "failed"
	}
	a.audit(ctx, action, d, refs, err)
	return err
}

// write applies every policy of a decision and records it.
func (a *Applier) write(ctx context.Context, d decide.Decision) ([]Ref, error) {
	if err := a.fenced(ctx); err != nil {
		return nil, err
	}
	aps, err := policy.Istio(d)
	if err != nil {
		return nil, err
	}
	var refs []Ref
	var errs []error
	uids := map[Ref]types.UID{}
	for i, ap := range aps {
		uid, err := a.applyOne(ctx, ap)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r := Ref{Namespace: ap.Namespace, Name: ap.Name, Target: d.Deny[i].Workload}
		refs = append(refs, r)
		uids[r] = uid
	}
	if len(refs) > 0 {
		q := &Quarantine{Decision: d, Policies: refs}
		if len(errs) > 0 {
			// Keep only the targets that were written.
			q.Decision.Deny = nil
			for _, r := range refs {
				for _, t := range d.Deny {
					if t.Workload == r.Target {
						q.Decision.Deny = append(q.Decision.Deny, t)
					}
				}
			}
		}
		sortQuarantine(q)
		a.mu.Lock()
		a.state[d.ID] = q
		a.mu.Unlock()
	}
	a.lastUIDs(uids)
	return refs, errors.Join(errs...)
}

// applyOne server-side applies one policy: created when absent; forced
// (meshward's field manager takes its fields back) only when the object
// is meshward's; refused when it is someone else's.
func (a *Applier) applyOne(ctx context.Context, ap *securityv1.AuthorizationPolicy) (types.UID, error) {
	client := a.istio.SecurityV1().AuthorizationPolicies(ap.Namespace)
	where := "AuthorizationPolicy " + ap.Namespace + "/" + ap.Name
	if len(a.cfg.Namespaces) > 0 && !slices.Contains(a.cfg.Namespaces, ap.Namespace) {
		return "", fmt.Errorf("%s: %w (meshward writes in %s)", where, ErrNamespace, strings.Join(a.cfg.Namespaces, ", "))
	}
	force := false
	have, err := client.Get(ctx, ap.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return "", fmt.Errorf("%s: %w", where, err)
	case have.Labels[policy.LabelManagedBy] != policy.ManagedBy:
		return "", fmt.Errorf("%s: %w (managed-by %q); not overwritten", where, ErrForeign, have.Labels[policy.LabelManagedBy])
	default:
		force = true
	}
	got, err := client.Apply(ctx, policy.ApplyConfig(ap), metav1.ApplyOptions{FieldManager: FieldManager, Force: force})
	if err != nil {
		return "", fmt.Errorf("%s: server-side apply: %w", where, err)
	}
	return got.UID, nil
}

// Promote enforces a dry-run quarantine now.
func (a *Applier) Promote(ctx context.Context, id string) error {
	a.op.Lock()
	defer a.op.Unlock()
	return a.promote(ctx, id)
}

func (a *Applier) promote(ctx context.Context, id string) error {
	a.mu.Lock()
	q, ok := a.state[id]
	var d decide.Decision
	if ok {
		d = q.Decision
	}
	a.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknown, id)
	}
	d.Mode = decide.Enforce
	refs, err := a.write(ctx, d)
	a.audit(ctx, "promote", d, refs, err)
	return err
}

// Release removes a quarantine before it expires.
func (a *Applier) Release(ctx context.Context, id string) error {
	a.op.Lock()
	defer a.op.Unlock()
	return a.remove(ctx, id, "release")
}

func (a *Applier) remove(ctx context.Context, id, action string) error {
	a.mu.Lock()
	q, ok := a.state[id]
	a.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknown, id)
	}
	if err := a.fenced(ctx); err != nil {
		return err
	}
	var errs []error
	for _, r := range q.Policies {
		err := a.istio.SecurityV1().AuthorizationPolicies(r.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting AuthorizationPolicy %s/%s: %w", r.Namespace, r.Name, err))
		}
	}
	err := errors.Join(errs...)
	if err == nil {
		a.mu.Lock()
		delete(a.state, id)
		a.mu.Unlock()
	}
	a.audit(ctx, action, q.Decision, q.Policies, err)
	return err
}

// Tick promotes the dry runs that are due (when the rules allow
// enforcement) and removes the quarantines that expired, as of now.
func (a *Applier) Tick(ctx context.Context, now time.Time) error {
	a.op.Lock()
	defer a.op.Unlock()
	a.mu.Lock()
	var expired, due []string
	for id, q := range a.state {
		if q.Decision.Expires.Sub(now) > a.cfg.Rules.TTL {
			// No quarantine lasts longer than a TTL from now: an expiry
			// further out (written from a time a record claimed, by an
			// older meshward) is not believed.
			q.Decision.Expires = now.Add(a.cfg.Rules.TTL)
		}
		if !now.Before(q.Decision.Expires) {
			expired = append(expired, id)
		} else if at, ok := decide.Promotion(q.Decision, a.cfg.Rules); ok && !now.Before(at) {
			due = append(due, id)
		}
	}
	a.mu.Unlock()
	sort.Strings(expired)
	sort.Strings(due)
	var errs []error
	for _, id := range expired {
		errs = append(errs, a.remove(ctx, id, "expire"))
	}
	for _, id := range due {
		errs = append(errs, a.promote(ctx, id))
	}
	return errors.Join(errs...)
}

// Run ticks every interval on the wall clock until ctx ends.
func (a *Applier) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := a.Tick(ctx, now); err != nil {
				a.log.Warn("quarantine tick", "err", err)
			}
		}
	}
}

// lastUIDs remembers the UIDs of the objects last written, for Events.
func (a *Applier) lastUIDs(m map[Ref]types.UID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for r, u := range m {
		a.uids[r] = u
	}
}

// audit writes the JSON log line and the Kubernetes Events of one action.
func (a *Applier) audit(ctx context.Context, action string, d decide.Decision, refs []Ref, err error) {
	targets := make([]string, 0, len(d.Deny))
	for _, t := range d.Deny {
		targets = append(targets, t.Workload)
	}
	attrs := []any{"action", action, "decision", d.ID, "principal", d.Principal, "mode", string(d.Mode),
		"targets", targets, "created", d.Created, "expires", d.Expires, "reason", d.Reason}
	if d.Suppressed != "" {
		attrs = append(attrs, "suppressed", d.Suppressed)
	}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
		a.log.Error("quarantine decision", attrs...)
	} else {
		a.log.Info("quarantine decision", attrs...)
	}
	reason := map[string]string{"quarantine": "Quarantined", "promote": "Enforced", "release": "Released",
		"expire": "Expired", "suppressed": "Suppressed", "failed": "QuarantineFailed"}[action]
	msg := fmt.Sprintf("meshward %s: %s (%s) → %s; %s", action, d.Principal, d.Mode, strings.Join(targets, ", "), d.Reason)
	if d.Suppressed != "" {
		msg += "; suppressed: " + d.Suppressed
	}
	if err != nil {
		msg += "; error: " + err.Error()
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	var objs []corev1.ObjectReference
	for _, r := range refs {
		a.mu.Lock()
		uid := a.uids[r]
		a.mu.Unlock()
		objs = append(objs, corev1.ObjectReference{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy",
			Namespace: r.Namespace, Name: r.Name, UID: uid})
	}
	if len(objs) == 0 && d.Namespace != "" && d.ServiceAccount != "" {
		// No policy to hang the Event on: the source's ServiceAccount.
		objs = append(objs, corev1.ObjectReference{APIVersion: "v1", Kind: "ServiceAccount", Namespace: d.Namespace, Name: d.ServiceAccount})
	}
	typ := corev1.EventTypeWarning
	if action == "release" || action == "expire" || action == "suppressed" {
		typ = corev1.EventTypeNormal
	}
	now := time.Now()
	for _, o := range objs {
		ev := &corev1.Event{
			ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", o.Name, now.UnixNano()+a.seq.Add(1)), Namespace: o.Namespace, Labels: map[string]string{policy.LabelManagedBy: policy.ManagedBy}},
			InvolvedObject:      o,
			Reason:              reason,
			Message:             msg,
			Type:                typ,
			Source:              corev1.EventSource{Component: FieldManager},
			ReportingController: "meshward.io/quarantine",
			ReportingInstance:   a.cfg.Instance,
			Action:              action,
			FirstTimestamp:      metav1.NewTime(now),
			LastTimestamp:       metav1.NewTime(now),
			Count:               1,
		}
		if _, err := a.kube.CoreV1().Events(o.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			a.log.Error("quarantine event not written", "decision", d.ID, "object", o.Namespace+"/"+o.Name, "err", err)
		}
	}
}
