package decide

import (
	"errors"
	"fmt"
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
	r.RateLimit, r.NamespaceRateLimit, r.RatePeriod = 2, 2, time.Minute
	g, err := NewGuard(r)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i, want := range []bool{true, true, false} {
		inc := incident(fmt.Sprintf("spiffe://cluster.local/ns/train/sa/a%d", i), "b.train")
		d := g.Decide(inc, nil, now.Add(time.Duration(i)*time.Second))
		if (d.Suppressed == "") != want || d.Held == want {
			t.Errorf("decision %d: suppressed %q (held %v), want standing=%v", i, d.Suppressed, d.Held, want)
		}
	}
	if p := g.Pending(); len(p) != 1 || p[0].Principal != "spiffe://cluster.local/ns/train/sa/a2" {
		t.Fatalf("pending %v, want the one the limit held", p)
	}
	// Within the period it keeps waiting; once the period passes it is let
	// through, on the control plane's clock.
	if got := g.Reconsider(nil, now.Add(30*time.Second)); len(got) != 0 {
		t.Errorf("let through within the period: %+v", got)
	}
	got := g.Reconsider(nil, now.Add(61*time.Second))
	if len(got) != 1 || got[0].Principal != "spiffe://cluster.local/ns/train/sa/a2" || !got[0].Created.Equal(now.Add(61*time.Second)) || len(g.Pending()) != 0 {
		t.Errorf("after the period: %+v, pending %v", got, g.Pending())
	}
	if _, err := NewGuard(Rules{}); err == nil {
		t.Error("empty rules were accepted")
	}
}

// TestGuardDecoys: decoys raised in one namespace use that namespace's
// budget, not the intruder's in another; decoys spread over many
// namespaces hold the intruder back one rate period at most, and it goes
// first when the limit frees (its namespace holds no quarantine).
func TestGuardDecoys(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	intruder := incident("spiffe://cluster.local/ns/shop/sa/web", "a.shop", "b.shop")
	g, _ := NewGuard(DefaultRules())
	var standing []Decision
	for i := 0; i < 5; i++ {
		d := g.Decide(incident(fmt.Sprintf("spiffe://cluster.local/ns/decoy/sa/d%d", i), "a.decoy", "b.decoy"), standing, now)
		if d.Suppressed == "" {
			standing = append(standing, d)
		}
	}
	if len(standing) != DefaultRules().NamespaceRateLimit {
		t.Fatalf("%d decoys of one namespace stood, want %d", len(standing), DefaultRules().NamespaceRateLimit)
	}
	if d := g.Decide(intruder, standing, now.Add(time.Second)); d.Suppressed != "" {
		t.Fatalf("the intruder was held back by decoys of another namespace: %q", d.Suppressed)
	}

	// Five decoys in five namespaces use the overall rate.
	g, _ = NewGuard(DefaultRules())
	standing = nil
	for i := 0; i < 8; i++ {
		d := g.Decide(incident(fmt.Sprintf("spiffe://cluster.local/ns/decoy%d/sa/d", i), "a.x", "b.x"), standing, now)
		if d.Suppressed == "" {
			standing = append(standing, d)
		}
	}
	d := g.Decide(intruder, standing, now.Add(time.Second))
	if !d.Held {
		t.Fatalf("the overall rate did not hold: %+v", d)
	}
	// While it waits, the intruder keeps fanning out (the detector grows
	// the incident the guard holds); the decoys, sent once, do not.
	intruder.NewEdges = append(intruder.NewEdges, detect.Edge{Destination: "c.shop"})
	got := g.Reconsider(standing, now.Add(time.Minute+time.Second))
	if len(got) == 0 || got[0].Principal != intruder.Principal {
		t.Fatalf("after the period, let through %+v; want the intruder first", got)
	}
	if !got[0].Expires.Equal(now.Add(time.Minute + time.Second).Add(time.Hour)) {
		t.Errorf("expires %v: not the control plane's clock plus the TTL", got[0].Expires)
	}
}

// TestGuardPendingEviction: past MaxPending, the namespace with the most
// pending loses its oldest.
func TestGuardPendingEviction(t *testing.T) {
	r := DefaultRules()
	r.RateLimit, r.NamespaceRateLimit, r.MaxPending = 1, 1, 3
	g, _ := NewGuard(r)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	g.Decide(incident("spiffe://td/ns/a/sa/first", "x.a"), nil, now) // stands
	for i, p := range []string{"spiffe://td/ns/b/sa/intruder", "spiffe://td/ns/flood/sa/0", "spiffe://td/ns/flood/sa/1", "spiffe://td/ns/flood/sa/2"} {
		if d := g.Decide(incident(p, "x.b"), nil, now.Add(time.Duration(i+1)*time.Second)); !d.Held {
			t.Fatalf("%s not held: %+v", p, d)
		}
	}
	var got []string
	for _, inc := range g.Pending() {
		got = append(got, inc.Principal)
	}
	if strings.Join(got, " ") != "spiffe://td/ns/b/sa/intruder spiffe://td/ns/flood/sa/1 spiffe://td/ns/flood/sa/2" || g.Dropped() != 1 {
		t.Errorf("pending %v (dropped %d), want the flood's oldest dropped", got, g.Dropped())
	}
}

// TestValidPrincipal: only an exact service account identity passes.
func TestValidPrincipal(t *testing.T) {
	for _, p := range []string{"spiffe://cluster.local/ns/shop/sa/web", "spiffe://td_1.example-x/ns/a-1/sa/b.c-d"} {
		if err := ValidPrincipal(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	for _, p := range []string{
		"spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/*/sa/web", "spiffe://*/ns/shop/sa/web",
		"spiffe://cluster.local/ns/shop/sa/web*", "*", "spiffe://cluster.local/ns/shop/sa/",
		"spiffe://cluster.local/ns/shop/sa/web/extra", "spiffe://cluster.local/ns/shop/sa/..", "spiffe://cluster.local/ns/../sa/web",
		"spiffe://cluster.local/ns/shop/sa/.", "spiffe://cluster.local//ns/shop/sa/web", "spiffe://cluster.local/ns/shop//sa/web",
		"spiffe://cluster.local/ns/sh%6Fp/sa/web", "spiffe://cluster.local/ns/shop/sa/w%2Aeb", "spiffe://Cluster.local/ns/shop/sa/web",
		"spiffe://cluster.local/ns/Shop/sa/web", "spiffe://cluster.local/ns/shop/sa/web?x", "spiffe://cluster.local/ns/shop/sa/web#x",
		"SPIFFE://cluster.local/ns/shop/sa/web", "cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/we b",
		"spiffe://cluster.local/ns/shop/sa/web\x00", "spiffe://./ns/shop/sa/web", "spiffe://cluster.local/ns/-shop/sa/web",
		"spiffe://cluster.local/sa/web/ns/shop", "10.0.0.1", "",
	} {
		if err := ValidPrincipal(p); !errors.Is(err, ErrPrincipal) {
			t.Errorf("%q passed (%v)", p, err)
		}
		d := Decide(incident(p, "a.b", "c.d"), DefaultRules(), 0, time.Unix(0, 0))
		if d.Suppressed == "" || d.Namespace != "" {
			t.Errorf("%q: decision stands: %+v", p, d)
		}
	}
}

// TestTargetsAreWorkloads: destinations that are no workload name, or in a
// protected namespace, are never denied; the others are.
func TestTargetsAreWorkloads(t *testing.T) {
	inc := incident("spiffe://cluster.local/ns/shop/sa/web", "cart.shop", "istiod.istio-system", "*.shop", "x.*", "a.b.c", "../x", "ok")
	d := Decide(inc, DefaultRules(), 0, time.Unix(0, 0))
	var got []string
	for _, t := range d.Deny {
		got = append(got, t.Workload)
	}
	if strings.Join(got, " ") != "cart.shop ok" || len(d.Skipped) != 5 || d.Suppressed != "" {
		t.Errorf("denied %v, skipped %v (%q)", got, d.Skipped, d.Suppressed)
	}
}
