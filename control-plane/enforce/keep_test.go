package enforce_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"github.com/redis/go-redis/v9"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/internal/redistest"
)

// published records what an RBAC sink sent per workload.
type published struct {
	mu  sync.Mutex
	got map[string]*rbacfilterv3.RBAC
}

func (p *published) SetRBAC(group string, f *rbacfilterv3.RBAC) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f == nil {
		delete(p.got, group)
	} else {
		p.got[group] = f
	}
	return nil
}

// mode returns "shadow", "enforce" or "" for a workload's rules.
func (p *published) mode(group string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.got[group]
	switch {
	case f == nil:
		return ""
	case f.GetRules() != nil && len(f.GetRules().GetPolicies()) > 0:
		return "enforce"
	case f.GetShadowRules() != nil && len(f.GetShadowRules().GetPolicies()) > 0:
		return "shadow"
	}
	return ""
}

// TestRBACKeptInRedis: the RBAC sink keeps its decisions in a real Redis,
// so a replica that does not lead publishes the leader's rules, and a
// restarted control plane publishes them again; release and expiry are
// forgotten everywhere. An unreadable store leaves what was published.
func TestRBACKeptInRedis(t *testing.T) {
	ctx := context.Background()
	rds := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	st, err := store.New(rdb, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	sink := func() (*enforce.RBAC, *published) {
		p := &published{got: map[string]*rbacfilterv3.RBAC{}}
		r := enforce.NewRBAC(p, rules(), log)
		r.Keep(enforce.StoreKeeper{Store: st})
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return r, p
	}
	leader, lp := sink()
	follower, fp := sink()

	t0 := time.Now()
	d := decide.Decision{ID: "ts-a-1", Principal: "spiffe://cluster.local/ns/train/sa/ts-a", Mode: decide.DryRun, Created: t0, Expires: t0.Add(time.Hour),
		Deny: []decide.Target{{Workload: "ts-b.train", Name: "ts-b", Namespace: "train"}}}
	d.TrustDomain, d.Namespace, d.ServiceAccount = decide.ParseSPIFFE(d.Principal)
	if err := leader.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if lp.mode("ts-b.train") != "shadow" || fp.mode("ts-b.train") != "" {
		t.Fatalf("after apply: leader %q, follower %q", lp.mode("ts-b.train"), fp.mode("ts-b.train"))
	}
	if err := follower.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if fp.mode("ts-b.train") != "shadow" {
		t.Fatalf("the follower publishes %q, want the leader's shadow rules", fp.mode("ts-b.train"))
	}
	// Promotion is kept too.
	if err := leader.Tick(ctx, t0.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := follower.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if lp.mode("ts-b.train") != "enforce" || fp.mode("ts-b.train") != "enforce" {
		t.Fatalf("after promotion: leader %q, follower %q", lp.mode("ts-b.train"), fp.mode("ts-b.train"))
	}
	// A restart: a new sink on the same store publishes the enforced rules
	// at once, and holds exactly one decision.
	restarted, rp := sink()
	if rp.mode("ts-b.train") != "enforce" || restarted.Active() != 1 || !restarted.Holds("ts-a-1") {
		t.Fatalf("after restart: %q, %d standing", rp.mode("ts-b.train"), restarted.Active())
	}
	// The store unreachable: Sync fails and what is published stays.
	_ = rdb.Close()
	broken, err := store.New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	restarted.Keep(enforce.StoreKeeper{Store: broken})
	if err := restarted.Sync(ctx); err == nil {
		t.Fatal("Sync with the store unreachable reported no error")
	}
	if rp.mode("ts-b.train") != "enforce" {
		t.Fatalf("an unreachable store removed the rules: %q", rp.mode("ts-b.train"))
	}
	// Release through the leader (on a new connection): forgotten by all.
	rdb2 := redis.NewClient(&redis.Options{Addr: rds.Addr})
	t.Cleanup(func() { _ = rdb2.Close() })
	st2, _ := store.New(rdb2, store.DefaultConfig())
	for _, r := range []*enforce.RBAC{leader, follower, restarted} {
		r.Keep(enforce.StoreKeeper{Store: st2})
	}
	if err := leader.Release(ctx, "ts-a-1"); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*enforce.RBAC{"follower": follower, "restarted": restarted} {
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if r.Active() != 0 {
			t.Errorf("%s still holds %d decisions after release", name, r.Active())
		}
	}
	if fp.mode("ts-b.train") != "" || rp.mode("ts-b.train") != "" || lp.mode("ts-b.train") != "" {
		t.Fatalf("rules left after release: %q %q %q", lp.mode("ts-b.train"), fp.mode("ts-b.train"), rp.mode("ts-b.train"))
	}
	// Expiry is forgotten in the store too.
	d.ID, d.Expires = "ts-a-2", t0.Add(time.Minute)
	if err := leader.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := leader.Tick(ctx, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	kept, err := st2.Quarantines(ctx)
	if err != nil || len(kept) != 0 {
		t.Fatalf("kept after expiry: %v %v", kept, err)
	}
}
