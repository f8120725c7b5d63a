package enforce_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/detect"
	"github.com/meshward/meshward/control-plane/enforce"
)

// TestMemorySink runs the loop into a memory sink on simulated time: a
// fan-out stands as a dry run, grows with its incident (one quarantine,
// every destination), is promoted when due, and is forgotten at expiry;
// a suppressed decision is never kept; a release takes one away.
func TestMemorySink(t *testing.T) {
	ctx := context.Background()
	r := decide.DefaultRules()
	r.Enforce, r.PromoteAfter = true, 2*time.Second
	sink := enforce.NewMemory(r)
	loop, err := enforce.New(detect.DefaultConfig(), r, webModel(t), sink, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	_, _ = loop.Observe(ctx, call(t0, web, "payments.shop", 403))
	d, err := loop.Observe(ctx, call(t0.Add(100*time.Millisecond), web, "users.shop", 403))
	if err != nil || d == nil || d.Suppressed != "" {
		t.Fatalf("decision %+v, %v", d, err)
	}
	if _, err := loop.Observe(ctx, call(t0.Add(200*time.Millisecond), web, "orders.shop", 403)); err != nil {
		t.Fatal(err)
	}
	st := sink.Standing()
	if sink.Active() != 1 || len(st) != 1 || len(st[0].Deny) != 3 || st[0].Mode != decide.DryRun || !sink.Holds(d.ID) {
		t.Fatalf("standing %+v, want one dry run denying payments, users and orders", st)
	}
	if err := loop.Tick(ctx, t0.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := sink.Standing(); len(st) != 1 || st[0].Mode != decide.Enforce {
		t.Fatalf("after PromoteAfter: %+v, want it enforced", st)
	}
	if err := loop.Tick(ctx, d.Expires); err != nil {
		t.Fatal(err)
	}
	if sink.Active() != 0 || sink.Holds(d.ID) {
		t.Fatalf("after the TTL: %+v standing", sink.Standing())
	}

	// A protected source is suppressed: audited, never kept.
	if err := sink.Apply(ctx, decide.Decision{ID: "x", Principal: "spiffe://cluster.local/ns/kube-system/sa/x", Suppressed: "protected"}); err != nil || sink.Active() != 0 {
		t.Fatalf("a suppressed decision: %v, %d standing", err, sink.Active())
	}
	keep := decide.Decision{ID: "y", Principal: web, Deny: []decide.Target{{Workload: "a.shop", Name: "a", Namespace: "shop"}}, Expires: t0.Add(time.Hour)}
	if err := sink.Apply(ctx, keep); err != nil || sink.Release(ctx, "y") != nil || sink.Active() != 0 {
		t.Fatalf("apply and release: %v, %d standing", err, sink.Active())
	}
	if sink.Release(ctx, "y") == nil {
		t.Error("releasing what does not stand: no error")
	}
}
