package server

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/internal/redistest"
)

// scrape reads one counter from /metrics (0 when absent).
func scrape(t *testing.T, s *Server, name string) float64 {
	_, body := get(t, s.AdminURL+"/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` ([0-9.e+]+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestRedisStoppedMidRun stops redis-server under a running control plane:
// the collector answers 503 with Retry-After, readiness fails, liveness
// holds, xDS keeps serving its last good snapshot (to a node that connects
// while Redis is down too); when the same server returns on the same port,
// the collector takes records again and xDS follows the store again.
func TestRedisStoppedMidRun(t *testing.T) {
	redis := redistest.StartWith(t, redistest.Options{Persist: true})
	s := startWith(t, redis.Addr, nil)
	ctx := context.Background()
	A, B := putModel(t, s.store, testModel(t, 1)), putModel(t, s.store, testModel(t, 2))
	if err := s.store.SetCurrent(ctx, A.version); err != nil {
		t.Fatal(err)
	}
	first := connect(t, s.ADSAddr, "cart-1")
	eventually(t, "the model reaching the first node", func() bool { return last(first.seen()) == A.cart })
	if code, _ := shipAnswer(t, s, batch()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}

	redis.Stop()
	code, retry := shipAnswer(t, s, batch())
	if code != 503 || retry == "" {
		t.Errorf("shipping with Redis gone: %d, Retry-After %q", code, retry)
	}
	if code, _ := get(t, s.AdminURL+"/readyz"); code != 503 {
		t.Errorf("readyz with Redis gone: %d", code)
	}
	// The rollout loop fails to read the store several times over, and
	// xDS serves on: a node connecting now gets the last good model.
	failed := scrape(t, s, "meshward_xds_sync_failures_total")
	eventually(t, "three failed syncs", func() bool { return scrape(t, s, "meshward_xds_sync_failures_total") >= failed+3 })
	late := connect(t, s.ADSAddr, "cart-2")
	eventually(t, "the last good model reaching a node that connected while Redis was down", func() bool { return last(late.seen()) == A.cart })
	if code, _ := get(t, s.AdminURL+"/healthz"); code != 200 {
		t.Errorf("healthz with Redis gone: %d (the process is alive)", code)
	}
	if got := first.seen(); len(got) != 1 {
		t.Errorf("the first node was sent %v while Redis was down", got)
	}

	redis.Restart()
	// go-redis redials a refused address in the background, about once a
	// second: poll until both the collector and readiness say so.
	eventually(t, "the collector taking records and readiness again", func() bool {
		c, _ := shipAnswer(t, s, batch())
		r, _ := get(t, s.AdminURL+"/readyz")
		return c == 200 && r == 200
	})
	// Redis kept its data, and a change of the model in force rolls out.
	eventually(t, "setting the model in force", func() bool { return s.store.SetCurrent(ctx, B.version) == nil })
	eventually(t, "the new model reaching both nodes", func() bool { return last(first.seen()) == B.cart && last(late.seen()) == B.cart })
}

// TestRestartLosesNothing stops a control plane in the middle of a rollout
// and starts a new one on the same Redis: the models, the model in force,
// the canary under watch, the decisions taken and the incidents are all
// there, and xDS serves the stable model and the canary as before.
func TestRestartLosesNothing(t *testing.T) {
	redis := redistest.Start(t)
	s1 := startWith(t, redis.Addr, nil)
	ctx := context.Background()
	A, B, C := putModel(t, s1.store, testModel(t, 1)), putModel(t, s1.store, testModel(t, 2)), putModel(t, s1.store, testModel(t, 3))
	if err := s1.store.SetCurrent(ctx, A.version); err != nil {
		t.Fatal(err)
	}
	// One canary promoted on its verdicts, the next one under watch.
	if err := s1.store.StartCanary(ctx, B.version, time.Now()); err != nil {
		t.Fatal(err)
	}
	if code := ship(t, s1, verdicts(A.cart, 1000, 10)+verdicts(B.cart, 1000, 10)); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	eventually(t, "the promotion", func() bool { cur, _ := s1.store.Current(ctx); return cur == B.version })
	if err := s1.store.StartCanary(ctx, C.version, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s1.store.PutIncident(ctx, map[string]any{"source": "spiffe://cluster.local/ns/shop/sa/intruder", "evidence": []string{"new edge"}}); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := startWith(t, redis.Addr, nil)
	_, models := get(t, s2.AdminURL+"/api/v1/models")
	for _, sha := range []string{A.version, B.version, C.version} {
		if !strings.Contains(models, sha) {
			t.Errorf("model %.12s lost across the restart: %s", sha, models)
		}
	}
	if !strings.Contains(models, `"current":"`+B.version+`"`) {
		t.Errorf("the model in force changed across the restart: %s", models)
	}
	_, rollouts := get(t, s2.AdminURL+"/api/v1/rollouts")
	if !strings.Contains(rollouts, `"canary":{"sha256":"`+C.version) || !strings.Contains(rollouts, `"outcome":"`+store.Promoted) {
		t.Errorf("the rollout was lost across the restart: %s", rollouts)
	}
	if _, incs := get(t, s2.AdminURL+"/api/v1/incidents"); !strings.Contains(incs, "intruder") {
		t.Errorf("the incident was lost across the restart: %s", incs)
	}
	var stable, canary *sidecar
	for i := 0; stable == nil || canary == nil; i++ {
		id := "cart-" + strconv.Itoa(i)
		if inCanary(id) && canary == nil {
			canary = connect(t, s2.ADSAddr, id)
		} else if !inCanary(id) && stable == nil {
			stable = connect(t, s2.ADSAddr, id)
		}
	}
	eventually(t, "the stable model and the canary served again", func() bool {
		return last(stable.seen()) == B.cart && last(canary.seen()) == C.cart
	})
}

// TestServeOnRedisCluster runs the control plane on a three-node Redis
// Cluster (-redis with the seed nodes): the collector stores, the leader
// is elected (a Lua script on one key), a training round publishes, and
// the model reaches a sidecar over ADS.
func TestServeOnRedisCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	s := startWith(t, strings.Join(cluster.Addrs, ","), nil)
	var b strings.Builder
	for i := 0; i < 400; i++ {
		b.WriteString(batch())
	}
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping to a cluster: %d", code)
	}
	eventually(t, "a leader", s.elector.Leading)
	rep, err := s.Train(context.Background())
	if err != nil || !rep.Published {
		t.Fatalf("training on a cluster: %+v %v", rep, err)
	}
	rel, err := s.store.Release(context.Background(), rep.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	sc := connect(t, s.ADSAddr, "cart-1")
	eventually(t, "the section of cart.shop over ADS", func() bool { return last(sc.seen()) == rel.Sections["cart.shop"] })
	if code, _ := get(t, s.AdminURL+"/readyz"); code != 200 {
		t.Errorf("readyz on a cluster: %d", code)
	}
}
