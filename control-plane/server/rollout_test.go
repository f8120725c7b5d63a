package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/control-plane/xds"
	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models"
)

// startWith starts a control plane on a Redis address with a changed
// configuration, fast enough for tests: one-second windows, the canary
// looked at every 20 ms.
func startWith(t *testing.T, redisAddr string, change func(*Config)) *Server {
	cfg := testConfig()
	cfg.Redis, cfg.CollectorAddr, cfg.AdminAddr = redisAddr, "127.0.0.1:0", "127.0.0.1:0"
	cfg.XDSAddr, cfg.XDS.WasmURI = "127.0.0.1:0", "/etc/meshward/meshward.wasm"
	cfg.XDS.CanaryShare = 0.3
	cfg.Store.Window = time.Second
	cfg.TrainEvery = 0
	cfg.Rollout.MinRequests, cfg.Rollout.Observe, cfg.Rollout.CheckEvery = 500, 0, 20*time.Millisecond
	if change != nil {
		change(&cfg)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// testModel trains a small real model; seeds give distinct versions.
func testModel(t testing.TB, seed uint64) ([]byte, string) {
	cfg := models.DefaultTrainConfig()
	cfg.Seed, cfg.Now = seed, time.Unix(0, 0)
	tr, _ := models.NewTrainer(cfg)
	for i := 0; i < 100; i++ {
		tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/r/%d", i), Source: "a", Destination: "cart.shop"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := models.Encode(m)
	return b, m.SHA256()
}

// sidecar is a real gRPC ADS client standing in for an Envoy: it ACKs every
// configuration and remembers the versions it received, in order.
type sidecar struct {
	id       string
	mu       sync.Mutex
	versions []string
}

func (sc *sidecar) seen() []string {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]string(nil), sc.versions...)
}

func connect(t *testing.T, addr, id string) *sidecar {
	c, err := xds.Dial(addr, xds.Node(id, "cart", "shop"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	sc := &sidecar{id: id}
	go func() {
		for {
			u, err := c.Recv()
			if err != nil {
				return
			}
			sc.mu.Lock()
			sc.versions = append(sc.versions, u.Version)
			sc.mu.Unlock()
			if c.ACK(u) != nil {
				return
			}
		}
	}()
	return sc
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

func last(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// verdicts is a batch of records of one model version as filters ship
// them: every flagged request, and one in ten of the others (sample_rate).
func verdicts(sha string, requests, flagged int) string {
	var b strings.Builder
	ns := itoa(time.Now().UnixNano())
	for i := 0; i < flagged; i++ {
		fmt.Fprintf(&b, `{"ts_ns":%s,"route":"/admin","score":0.99,"flagged":true,"model":%q,"request":{"Method":"GET","Path":"/admin","Source":"frontend","Destination":"cart.shop"}}`+"\n", ns, sha)
	}
	for i := 0; i < (requests-flagged)/10; i++ {
		fmt.Fprintf(&b, `{"ts_ns":%s,"route":"/items/{num}","score":0.1,"model":%q,"sample_rate":0.1,"request":{"Method":"GET","Path":"/items/{num}","Source":"frontend","Destination":"cart.shop"}}`+"\n", ns, sha)
	}
	return b.String()
}

// TestCanaryDecidedByFlaggedRate runs the whole decision on a real
// redis-server with real ADS clients: a canary reaches only its share; one
// whose flagged rate stays within bounds of the stable model's is promoted
// and reaches every node; one that flags far more is rolled back, and the
// canary nodes return to the stable model.
func TestCanaryDecidedByFlaggedRate(t *testing.T) {
	s := startWith(t, redistest.Start(t).Addr, nil)
	ctx := context.Background()
	a, shaA := testModel(t, 1)
	b, shaB := testModel(t, 2)
	c, shaC := testModel(t, 3)
	for _, m := range [][]byte{a, b, c} {
		if _, err := s.store.PutModel(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.store.SetCurrent(ctx, shaA); err != nil {
		t.Fatal(err)
	}
	var canaries, stables []*sidecar
	for i := 0; i < 20; i++ {
		sc := connect(t, s.ADSAddr, fmt.Sprintf("cart-%d", i))
		if xds.InCanary(sc.id, 0.3) {
			canaries = append(canaries, sc)
		} else {
			stables = append(stables, sc)
		}
	}
	if len(canaries) == 0 || len(stables) == 0 {
		t.Fatalf("%d canaries and %d stable nodes", len(canaries), len(stables))
	}
	all := append(append([]*sidecar(nil), canaries...), stables...)
	waitFor := func(scs []*sidecar, version string) {
		t.Helper()
		eventually(t, "version "+version[:12], func() bool {
			for _, sc := range scs {
				if last(sc.seen()) != version {
					return false
				}
			}
			return true
		})
	}
	waitFor(all, shaA)

	// A canary within bounds: 1.2 % flagged where the stable model flags 1 %.
	if err := s.store.StartCanary(ctx, shaB, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(canaries, shaB)
	if code := ship(t, s, verdicts(shaA, 1000, 10)+verdicts(shaB, 1000, 12)); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	waitFor(all, shaB)
	if cur, _ := s.store.Current(ctx); cur != shaB {
		t.Errorf("current %s after the promotion, want %s", cur, shaB)
	}

	// A canary that flags 20 % where the stable model flags 1 %.
	if err := s.store.StartCanary(ctx, shaC, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(canaries, shaC)
	if code := ship(t, s, verdicts(shaB, 1000, 10)+verdicts(shaC, 1000, 200)); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	waitFor(canaries, shaB)
	if cur, _ := s.store.Current(ctx); cur != shaB {
		t.Errorf("current %s after the rollback, want %s", cur, shaB)
	}
	decs, err := s.store.Decisions(ctx, 10)
	if err != nil || len(decs) != 2 || decs[0].Outcome != store.RolledBack || decs[0].SHA256 != shaC ||
		decs[1].Outcome != store.Promoted || decs[1].SHA256 != shaB {
		t.Fatalf("decisions %+v (%v)", decs, err)
	}
	if r := decs[0].Canary.Rate(); r < 0.19 || r > 0.21 {
		t.Errorf("the rolled-back canary's rate %.3f, want 0.2 (sampled records weighted)", r)
	}
	// What each node was served, in order: the stable nodes never saw a
	// canary before its promotion, nor the rolled-back one at all.
	for _, sc := range stables {
		if got := strings.Join(sc.seen(), ","); got != shaA+","+shaB {
			t.Errorf("stable node %s was served %s", sc.id, got)
		}
	}
	for _, sc := range canaries {
		if got := strings.Join(sc.seen(), ","); got != strings.Join([]string{shaA, shaB, shaC, shaB}, ",") {
			t.Errorf("canary node %s was served %s", sc.id, got)
		}
	}
	if _, body := get(t, s.AdminURL+"/api/v1/rollouts"); !strings.Contains(body, `"outcome":"rolled_back"`) || !strings.Contains(body, `"current":"`+shaB) {
		t.Errorf("rollouts API: %s", body)
	}
}

func inCanary(id string) bool { return xds.InCanary(id, 0.3) }

// TestReplicasFollowTheLeadersDecision runs two replicas on one Redis: one
// leads and decides, and the other's xDS follows the decision it finds in
// the store.
func TestReplicasFollowTheLeadersDecision(t *testing.T) {
	addr := redistest.Start(t).Addr
	r1 := startWith(t, addr, nil)
	r2 := startWith(t, addr, nil)
	eventually(t, "one leader", func() bool { return r1.elector.Leading() != r2.elector.Leading() })
	ctx := context.Background()
	a, shaA := testModel(t, 1)
	b, shaB := testModel(t, 2)
	for _, m := range [][]byte{a, b} {
		if _, err := r1.store.PutModel(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := r1.store.SetCurrent(ctx, shaA); err != nil {
		t.Fatal(err)
	}
	var all []*sidecar
	for i := 0; i < 6; i++ {
		all = append(all, connect(t, r1.ADSAddr, fmt.Sprintf("cart-%d", i)), connect(t, r2.ADSAddr, fmt.Sprintf("cart-%d", i)))
	}
	if err := r1.store.StartCanary(ctx, shaB, time.Now()); err != nil {
		t.Fatal(err)
	}
	if code := ship(t, r2, verdicts(shaA, 1000, 10)+verdicts(shaB, 1000, 10)); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	eventually(t, "the promotion reaching the nodes of both replicas", func() bool {
		for _, sc := range all {
			if last(sc.seen()) != shaB {
				return false
			}
		}
		return true
	})
	if decs, _ := r2.store.Decisions(ctx, 10); len(decs) != 1 {
		t.Errorf("%d decisions, want exactly one (by the leader)", len(decs))
	}
}
