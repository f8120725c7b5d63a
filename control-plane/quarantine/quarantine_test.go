package quarantine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	securityv1beta1 "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/policy"
	"github.com/meshward/meshward/internal/istiofake"
)

// syncBuffer is a log sink tests read while the applier writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func testRules() decide.Rules {
	r := decide.DefaultRules()
	r.Enforce, r.PromoteAfter, r.TTL = true, 2*time.Second, time.Hour
	return r
}

func decision(id, sa string, targets ...string) decide.Decision {
	d := decide.Decision{ID: id, Principal: "spiffe://cluster.local/ns/train/sa/" + sa, Mode: decide.DryRun,
		Created: t0, Expires: t0.Add(time.Hour), Reason: "new_destinations=2"}
	d.TrustDomain, d.Namespace, d.ServiceAccount = decide.ParseSPIFFE(d.Principal)
	for _, w := range targets {
		name, ns := decide.SplitWorkload(w)
		d.Deny = append(d.Deny, decide.Target{Workload: w, Name: name, Namespace: ns})
	}
	return d
}

// owned lists meshward's policies as the API server holds them.
func owned(t *testing.T, ic istioclient.Interface) []*securityv1.AuthorizationPolicy {
	t.Helper()
	l, err := ic.SecurityV1().AuthorizationPolicies("").List(context.Background(), metav1.ListOptions{LabelSelector: policy.OwnedSelector})
	if err != nil {
		t.Fatal(err)
	}
	var out []*securityv1.AuthorizationPolicy
	for _, ap := range l.Items {
		if ap.Name != "stray" {
			out = append(out, ap)
		}
	}
	return out
}

func events(t *testing.T, kc kubernetes.Interface, reason string) int {
	t.Helper()
	l, err := kc.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range l.Items {
		if e.Reason == reason {
			n++
		}
	}
	return n
}

// testLifecycle is the applier's whole life on one API server: apply
// (idempotent), promote, a foreign object, restart, merge, release,
// expiry, a suppressed decision.
func testLifecycle(t *testing.T, ic istioclient.Interface, kc kubernetes.Interface, real bool) {
	ctx := context.Background()
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	a, err := New(Config{Rules: testRules()}, ic, kc, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	d := decision("ts-order-1", "ts-order", "ts-user.train", "ts-auth.auth")
	for i := 0; i < 2; i++ { // twice: idempotent
		if err := a.Apply(ctx, d); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	aps := owned(t, ic)
	if len(aps) != 2 || a.Active() != 1 {
		t.Fatalf("after applying twice: %d objects, %d active; want 2 and 1", len(aps), a.Active())
	}
	for _, ap := range aps {
		if ap.Annotations[policy.AnnotationDryRun] != "true" || ap.Spec.Action != securityv1beta1.AuthorizationPolicy_DENY ||
			ap.Spec.Rules[0].From[0].Source.Principals[0] != "cluster.local/ns/train/sa/ts-order" || ap.Labels[policy.LabelDecision] != "ts-order-1" {
			t.Errorf("policy %s/%s: %v %v", ap.Namespace, ap.Name, ap.Annotations, ap.Spec.String())
		}
		managers := map[string]metav1.ManagedFieldsOperationType{}
		for _, mf := range ap.ManagedFields {
			managers[mf.Manager] = mf.Operation
		}
		// The fake's tracker does not carry the field manager's name: only
		// a real API server is checked.
		if real && (len(managers) != 1 || managers[FieldManager] != metav1.ManagedFieldsOperationApply) {
			t.Errorf("policy %s: field managers %v, want only %s (Apply)", ap.Name, managers, FieldManager)
		}
	}
	if n := events(t, kc, "Quarantined"); n != 4 {
		t.Errorf("%d Quarantined events, want 4 (two applies, two objects)", n)
	}
	// The Events hang on the policy objects.
	uids := map[string]bool{}
	for _, ap := range aps {
		uids[string(ap.UID)] = true
	}
	evs, err := kc.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.Reason == "Quarantined" && (e.InvolvedObject.Kind != "AuthorizationPolicy" || !uids[string(e.InvolvedObject.UID)] || e.Source.Component != FieldManager) {
			t.Errorf("event %s is on %+v", e.Name, e.InvolvedObject)
		}
	}

	// Not due yet, then due.
	if err := a.Tick(ctx, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if owned(t, ic)[0].Annotations[policy.AnnotationDryRun] != "true" {
		t.Fatal("promoted before PromoteAfter")
	}
	if err := a.Tick(ctx, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, ap := range owned(t, ic) {
		if _, dry := ap.Annotations[policy.AnnotationDryRun]; dry {
			t.Errorf("%s still a dry run after promotion", ap.Name)
		}
	}
	if q, _ := a.Get("ts-order-1"); q.Decision.Mode != decide.Enforce {
		t.Errorf("mode after promotion: %s", q.Decision.Mode)
	}

	// Someone edits meshward's object: the next apply takes its fields back
	// (forced, as meshward owns the object).
	edited := owned(t, ic)[0]
	edited.Spec.Action = securityv1beta1.AuthorizationPolicy_ALLOW
	if _, err := ic.SecurityV1().AuthorizationPolicies(edited.Namespace).Update(ctx, edited, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, d); err != nil {
		t.Fatalf("re-applying over an edit: %v", err)
	}
	if back, err := ic.SecurityV1().AuthorizationPolicies(edited.Namespace).Get(ctx, edited.Name, metav1.GetOptions{}); err != nil || back.Spec.Action != securityv1beta1.AuthorizationPolicy_DENY {
		t.Fatalf("after re-applying over an edit: %v %v", back.Spec.Action, err)
	}

	// A foreign object with the name meshward would use is left alone.
	foreign := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: policy.Name("ts-pay-1", "ts-pay"), Namespace: "train",
		Labels: map[string]string{"team": "payments"}}, Spec: securityv1beta1.AuthorizationPolicy{Action: securityv1beta1.AuthorizationPolicy_ALLOW}}
	if _, err := ic.SecurityV1().AuthorizationPolicies("train").Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = a.Apply(ctx, decision("ts-pay-1", "ts-pay", "ts-pay.train"))
	if !errors.Is(err, ErrForeign) {
		t.Fatalf("applying over a foreign object: %v, want ErrForeign", err)
	}
	got, err := ic.SecurityV1().AuthorizationPolicies("train").Get(ctx, foreign.Name, metav1.GetOptions{})
	if err != nil || got.Spec.Action != securityv1beta1.AuthorizationPolicy_ALLOW || got.Labels[policy.LabelManagedBy] != "" {
		t.Fatalf("the foreign object changed: %v %v", got, err)
	}
	if _, ok := a.Get("ts-pay-1"); ok {
		t.Error("a refused decision is held as standing")
	}

	// A hand-made object wearing meshward's label but carrying no decision
	// is skipped by a restart (warned about), neither adopted nor deleted.
	stray := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "stray", Namespace: "train",
		Labels: map[string]string{policy.LabelManagedBy: policy.ManagedBy}}, Spec: securityv1beta1.AuthorizationPolicy{Action: securityv1beta1.AuthorizationPolicy_DENY}}
	if _, err := ic.SecurityV1().AuthorizationPolicies("train").Create(ctx, stray, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ic.SecurityV1().AuthorizationPolicies("train").Delete(ctx, "stray", metav1.DeleteOptions{}); err != nil {
			t.Errorf("the stray object is gone: %v", err)
		}
	}()

	// An applier limited to some namespaces refuses a target elsewhere and
	// rebuilds from those namespaces alone.
	limited, err := New(Config{Rules: testRules(), Namespaces: []string{"train"}}, ic, kc, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := limited.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if l := limited.List(); len(l) != 1 || len(l[0].Policies) != 1 || l[0].Policies[0].Namespace != "train" {
		t.Errorf("rebuilt from train alone: %+v", l)
	}
	if err := limited.Apply(ctx, decision("ts-x-1", "ts-x", "ts-auth.auth")); !errors.Is(err, ErrNamespace) {
		t.Errorf("a target outside the namespaces: %v, want ErrNamespace", err)
	}

	// A restart: a new applier rebuilds the same state from the server.
	b, err := New(Config{Rules: testRules()}, ic, kc, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	warned := false
	for _, l := range logs.lines() {
		if l["msg"] == "skipping an object labelled as meshward's" && strings.Contains(l["err"].(string), "train/stray") {
			warned = true
		}
	}
	if !warned {
		t.Error("the stray object was skipped silently")
	}
	before, after := a.List(), b.List()
	if len(after) != 1 || len(after[0].Policies) != 2 || after[0].Decision.Mode != decide.Enforce ||
		after[0].Decision.Principal != before[0].Decision.Principal || !after[0].Decision.Expires.Equal(before[0].Decision.Expires) {
		t.Fatalf("rebuilt state differs:\nbefore %+v\nafter  %+v", before, after)
	}
	// A new incident about the same principal joins the quarantine.
	if err := b.Apply(ctx, decision("ts-order-2", "ts-order", "ts-user.train", "ts-food.train")); err != nil {
		t.Fatal(err)
	}
	if n, l := len(owned(t, ic)), b.List(); n != 3 || len(l) != 1 || l[0].Decision.ID != "ts-order-1" {
		t.Fatalf("after a second incident about the same principal: %d objects, %+v", n, l)
	}

	// Release removes every object; a second release is an error.
	if err := b.Release(ctx, "ts-order-1"); err != nil {
		t.Fatal(err)
	}
	if n := len(owned(t, ic)); n != 0 || b.Active() != 0 {
		t.Fatalf("after release: %d objects, %d active", n, b.Active())
	}
	if err := b.Release(ctx, "ts-order-1"); !errors.Is(err, ErrUnknown) {
		t.Errorf("second release: %v", err)
	}

	// Expiry.
	d3 := decision("ts-food-1", "ts-food", "ts-user.train")
	if err := b.Apply(ctx, d3); err != nil {
		t.Fatal(err)
	}
	if err := b.Tick(ctx, d3.Expires.Add(-time.Millisecond)); err != nil || len(owned(t, ic)) != 1 {
		t.Fatalf("before expiry: %v, %d objects", err, len(owned(t, ic)))
	}
	if err := b.Tick(ctx, d3.Expires); err != nil || len(owned(t, ic)) != 0 || b.Active() != 0 {
		t.Fatalf("at expiry: %v, %d objects", err, len(owned(t, ic)))
	}

	// A suppressed decision writes nothing and is audited anyway.
	s := decision("istiod-1", "istiod", "ts-user.train")
	s.Suppressed = "the source's namespace istio-system is protected"
	if err := b.Apply(ctx, s); err != nil || len(owned(t, ic)) != 0 {
		t.Fatalf("suppressed: %v, %d objects", err, len(owned(t, ic)))
	}

	// Every action has its audit line and its Event.
	actions := map[string]int{}
	for _, l := range logs.lines() {
		if l["msg"] == "quarantine decision" {
			actions[l["action"].(string)]++
		}
	}
	for _, want := range []string{"quarantine", "promote", "failed", "release", "expire", "suppressed"} {
		if actions[want] == 0 {
			t.Errorf("no audit line for %q (have %v)", want, actions)
		}
	}
	for _, reason := range []string{"Enforced", "QuarantineFailed", "Released", "Expired", "Suppressed"} {
		if events(t, kc, reason) == 0 {
			t.Errorf("no %s Event", reason)
		}
	}
	if _, err := ic.SecurityV1().AuthorizationPolicies("train").Get(ctx, foreign.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		t.Error("the foreign object was deleted")
	}
}

func TestLifecycleFake(t *testing.T) {
	testLifecycle(t, istiofake.New(), kubefake.NewClientset(), false)
}
