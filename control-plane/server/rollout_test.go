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

// testModel trains a small real model of cart.shop; seeds give distinct
// versions.
func testModel(t testing.TB, seed uint64) []byte {
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
	return b
}

// stored is a model in the store: its release's version (what the store's
// rollout state names) and the version of cart.shop's section (what the
// sidecars are served and the filters report).
type stored struct{ version, cart string }

// putModel stores a model of testModel as a release.
func putModel(t testing.TB, st *store.Store, m []byte) stored {
	t.Helper()
	v, err := st.PutModel(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Release(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	return stored{version: v, cart: r.Sections["cart.shop"]}
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

func connect(t *testing.T, addr, id string) *sidecar { return connectAs(t, addr, id, "cart") }

// connectAs is a sidecar of a workload in namespace shop that records the
// versions it is sent and ACKs each.
func connectAs(t *testing.T, addr, id, workload string) *sidecar {
	c, err := xds.Dial(addr, xds.Node(id, workload, "shop"))
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
	eventuallyWithin(t, 10*time.Second, what, cond)
}

// eventuallyWithin is eventually with its own deadline (what goes through
// a leader election and a kube-apiserver takes longer).
func eventuallyWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
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
	A, B, C := putModel(t, s.store, testModel(t, 1)), putModel(t, s.store, testModel(t, 2)), putModel(t, s.store, testModel(t, 3))
	if err := s.store.SetCurrent(ctx, A.version); err != nil {
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
	waitFor(all, A.cart)

	// A canary within bounds: 1.2 % flagged where the stable model flags 1 %.
	if err := s.store.StartCanary(ctx, B.version, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(canaries, B.cart)
	if code := ship(t, s, verdicts(A.cart, 1000, 10)+verdicts(B.cart, 1000, 12)); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	waitFor(all, B.cart)
	if cur, _ := s.store.Current(ctx); cur != B.version {
		t.Errorf("current %s after the promotion, want %s", cur, B.version)
	}

	// A canary that flags 20 % where the stable model flags 1 %.
	if err := s.store.StartCanary(ctx, C.version, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(canaries, C.cart)
	if code := ship(t, s, verdicts(B.cart, 1000, 10)+verdicts(C.cart, 1000, 200)); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	waitFor(canaries, B.cart)
	if cur, _ := s.store.Current(ctx); cur != B.version {
		t.Errorf("current %s after the rollback, want %s", cur, B.version)
	}
	decs, err := s.store.Decisions(ctx, 10)
	if err != nil || len(decs) != 2 || decs[0].Outcome != store.RolledBack || decs[0].SHA256 != C.version ||
		decs[1].Outcome != store.Promoted || decs[1].SHA256 != B.version {
		t.Fatalf("decisions %+v (%v)", decs, err)
	}
	if r := decs[0].Canary.Rate(); r < 0.19 || r > 0.21 {
		t.Errorf("the rolled-back canary's rate %.3f, want 0.2 (sampled records weighted)", r)
	}
	// What each node was served, in order: the stable nodes never saw a
	// canary before its promotion, nor the rolled-back one at all.
	for _, sc := range stables {
		if got := strings.Join(sc.seen(), ","); got != A.cart+","+B.cart {
			t.Errorf("stable node %s was served %s", sc.id, got)
		}
	}
	for _, sc := range canaries {
		if got := strings.Join(sc.seen(), ","); got != strings.Join([]string{A.cart, B.cart, C.cart, B.cart}, ",") {
			t.Errorf("canary node %s was served %s", sc.id, got)
		}
	}
	if _, body := get(t, s.AdminURL+"/api/v1/rollouts"); !strings.Contains(body, `"outcome":"rolled_back"`) || !strings.Contains(body, `"current":"`+B.version) {
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
	A, B := putModel(t, r1.store, testModel(t, 1)), putModel(t, r1.store, testModel(t, 2))
	if err := r1.store.SetCurrent(ctx, A.version); err != nil {
		t.Fatal(err)
	}
	var all []*sidecar
	for i := 0; i < 6; i++ {
		all = append(all, connect(t, r1.ADSAddr, fmt.Sprintf("cart-%d", i)), connect(t, r2.ADSAddr, fmt.Sprintf("cart-%d", i)))
	}
	if err := r1.store.StartCanary(ctx, B.version, time.Now()); err != nil {
		t.Fatal(err)
	}
	if code := ship(t, r2, verdicts(A.cart, 1000, 10)+verdicts(B.cart, 1000, 10)); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	eventually(t, "the promotion reaching the nodes of both replicas", func() bool {
		for _, sc := range all {
			if last(sc.seen()) != B.cart {
				return false
			}
		}
		return true
	})
	if decs, _ := r2.store.Decisions(ctx, 10); len(decs) != 1 {
		t.Errorf("%d decisions, want exactly one (by the leader)", len(decs))
	}
}

// TestOneChangedSectionReachesItsGroupOnly: through the store and the
// server's sync, a new model in force whose only change is one workload's
// section sends one update, to that workload's sidecars; the others are
// sent nothing (the next model, which changes every section, is the next
// thing each of them receives).
func TestOneChangedSectionReachesItsGroupOnly(t *testing.T) {
	s := startWith(t, redistest.Start(t).Addr, nil)
	ctx := context.Background()
	train := func(seed uint64) *models.Model {
		cfg := models.DefaultTrainConfig()
		cfg.Seed, cfg.Now = seed, time.Unix(0, 0)
		tr, _ := models.NewTrainer(cfg)
		for _, w := range []string{"cart.shop", "ads.shop"} {
			for i := 0; i < 100; i++ {
				tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/r/%d", i), Source: "a", Destination: w})
			}
		}
		m, err := tr.Model()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	put := func(m *models.Model) *store.Release {
		b, err := models.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.store.PutModel(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := s.store.Release(ctx, v)
		if err := s.store.SetCurrent(ctx, v); err != nil {
			t.Fatal(err)
		}
		return r
	}
	m1 := train(1)
	r1 := put(m1)
	var carts, ads []*sidecar
	for i := 0; i < 3; i++ {
		carts = append(carts, connect(t, s.ADSAddr, fmt.Sprintf("cart-%d", i)))
		ads = append(ads, connectAs(t, s.ADSAddr, fmt.Sprintf("ads-%d", i), "ads"))
	}
	all := append(append([]*sidecar(nil), carts...), ads...)
	eventually(t, "the first model", func() bool {
		for _, sc := range carts {
			if last(sc.seen()) != r1.Sections["cart.shop"] {
				return false
			}
		}
		for _, sc := range ads {
			if last(sc.seen()) != r1.Sections["ads.shop"] {
				return false
			}
		}
		return true
	})
	// Retrained: only cart's part changed.
	w := *m1.Workloads["cart.shop"]
	w.Routes = append([]models.Route(nil), w.Routes...)
	w.Routes[0].Count++
	m1.Workloads["cart.shop"] = &w
	r2 := put(m1)
	if r2.Sections["ads.shop"] != r1.Sections["ads.shop"] || r2.Sections["cart.shop"] == r1.Sections["cart.shop"] {
		t.Fatal("the second model should change cart's section only")
	}
	eventually(t, "cart's new section", func() bool {
		for _, sc := range carts {
			if last(sc.seen()) != r2.Sections["cart.shop"] {
				return false
			}
		}
		return true
	})
	r3 := put(train(3))
	eventually(t, "the third model everywhere", func() bool {
		for _, sc := range all {
			w := "cart.shop"
			if strings.HasPrefix(sc.id, "ads") {
				w = "ads.shop"
			}
			if last(sc.seen()) != r3.Sections[w] {
				return false
			}
		}
		return true
	})
	for _, sc := range carts {
		if got, want := strings.Join(sc.seen(), " "), strings.Join([]string{r1.Sections["cart.shop"], r2.Sections["cart.shop"], r3.Sections["cart.shop"]}, " "); got != want {
			t.Errorf("%s received %s, want %s", sc.id, got, want)
		}
	}
	for _, sc := range ads {
		if got, want := strings.Join(sc.seen(), " "), strings.Join([]string{r1.Sections["ads.shop"], r3.Sections["ads.shop"]}, " "); got != want {
			t.Errorf("%s, whose section did not change, received %s, want %s", sc.id, got, want)
		}
	}
}
