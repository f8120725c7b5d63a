package decide

import (
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/detect"
)

func incident(principal string, dsts ...string) *detect.Incident {
	inc := &detect.Incident{ID: "x-1", Principal: principal, Signals: []string{"new_destinations=2"}}
	for _, d := range dsts {
		inc.NewEdges = append(inc.NewEdges, detect.Edge{Destination: d})
	}
	return inc
}

func TestGuardRails(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	r := DefaultRules()
	good := incident("spiffe://cluster.local/ns/train/sa/ts-order", "ts-user.train", "ts-auth.auth", "ts-user.train")
	d := Decide(good, r, 0, now)
	if d.Suppressed != "" || d.Mode != DryRun || len(d.Deny) != 2 || d.Namespace != "train" || !d.Expires.Equal(now.Add(r.TTL)) {
		t.Fatalf("standing decision: %+v", d)
	}
	if d.Deny[0] != (Target{Workload: "ts-auth.auth", Name: "ts-auth", Namespace: "auth"}) {
		t.Errorf("targets are not sorted and split: %+v", d.Deny)
	}
	for _, ns := range r.Protected {
		if d := Decide(incident("spiffe://cluster.local/ns/"+ns+"/sa/x", "a.b", "c.d"), r, 0, now); !strings.Contains(d.Suppressed, "protected") {
			t.Errorf("%s: a protected namespace was not suppressed: %q", ns, d.Suppressed)
		}
	}
	if d := Decide(good, r, r.MaxActive, now); !strings.Contains(d.Suppressed, "cap") {
		t.Errorf("the cap did not hold: %q", d.Suppressed)
	}
	if _, ok := Promotion(d, r); ok {
		t.Error("promotion without enforcement allowed")
	}
	r.Enforce, r.PromoteAfter = true, 30*time.Second
	d = Decide(good, r, 0, now)
	if at, ok := Promotion(d, r); d.Mode != DryRun || !ok || !at.Equal(now.Add(30*time.Second)) {
		t.Errorf("enforce allowed: mode %s, promotion at %v (%v); want a dry run first, promoted 30 s later", d.Mode, at, ok)
	}
}

func TestGuardRateLimit(t *testing.T) {
	r := DefaultRules()
	r.RateLimit, r.RatePeriod = 2, time.Minute
	g, err := NewGuard(r)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	inc := incident("spiffe://cluster.local/ns/train/sa/a", "b.train")
	for i, want := range []bool{true, true, false} {
		d := g.Decide(inc, 0, now.Add(time.Duration(i)*time.Second))
		if (d.Suppressed == "") != want {
			t.Errorf("decision %d: suppressed %q, want standing=%v", i, d.Suppressed, want)
		}
	}
	// A suppressed decision does not use up the budget; the period passing
	// frees it.
	if d := g.Decide(inc, 0, now.Add(61*time.Second)); d.Suppressed != "" {
		t.Errorf("after the period: %q", d.Suppressed)
	}
	if _, err := NewGuard(Rules{}); err == nil {
		t.Error("empty rules were accepted")
	}
}
