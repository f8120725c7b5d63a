package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/xds"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/redistest"
)

// configSidecar is an ADS client standing in for an Envoy that keeps the
// plugin configuration it was last served.
type configSidecar struct {
	mu   sync.Mutex
	last pluginconfig.Config
	n    int
}

func (sc *configSidecar) exceptions() (ids []string, updates int) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for _, r := range sc.last.Exceptions {
		ids = append(ids, r.ID)
	}
	return ids, sc.n
}

func connectConfig(t *testing.T, addr, id string) *configSidecar {
	t.Helper()
	c, err := xds.Dial(addr, xds.Node(id, "cart", "shop"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	sc := &configSidecar{}
	go func() {
		for {
			u, err := c.Recv()
			if err != nil {
				return
			}
			var pc pluginconfig.Config
			if json.Unmarshal(u.PluginConfig, &pc) == nil {
				sc.mu.Lock()
				sc.last, sc.n = pc, sc.n+1
				sc.mu.Unlock()
			}
			if c.ACK(u) != nil {
				return
			}
		}
	}()
	return sc
}

// adminDo calls the admin API with a token ("" for none) and a body.
func adminDo(t testing.TB, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func has(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// startLogged is startWith with its log kept.
func startLogged(t *testing.T, redisAddr string, logs *lockedBuffer) *Server {
	t.Helper()
	cfg := testConfig()
	cfg.Redis, cfg.CollectorAddr, cfg.AdminAddr = redisAddr, "127.0.0.1:0", "127.0.0.1:0"
	cfg.XDSAddr, cfg.XDS.WasmURI = "127.0.0.1:0", "/etc/meshward/meshward.wasm"
	cfg.TrainEvery, cfg.Store.Window = 0, time.Second
	cfg.Rollout.MinRequests, cfg.Rollout.Observe, cfg.Rollout.CheckEvery = 500, 0, 20*time.Millisecond
	s, err := New(cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestExceptionsLifecycle, on a real redis-server: an exception added
// through the admin API reaches the workload's sidecar with the next xDS
// update, is an audit line, survives a control-plane restart, expires on
// time (deleted, and gone from the sidecar's configuration), and is
// revoked by DELETE; a bad one is refused with every wrong field named,
// and an unauthenticated caller changes nothing.
func TestExceptionsLifecycle(t *testing.T) {
	redis := redistest.Start(t)
	logs := &lockedBuffer{}
	s1 := startLogged(t, redis.Addr, logs)
	ctx := context.Background()
	A := putModel(t, s1.store, testModel(t, 1))
	if err := s1.store.SetCurrent(ctx, A.version); err != nil {
		t.Fatal(err)
	}
	sc := connectConfig(t, s1.ADSAddr, "cart-1")
	eventually(t, "the model served", func() bool { _, n := sc.exceptions(); return n > 0 })

	url := s1.AdminURL + "/api/v1/exceptions"
	for _, c := range []struct{ name, method, token string }{
		{"no token", "POST", ""}, {"a wrong token", "POST", "nope"}, {"list without a token", "GET", ""},
	} {
		if code, _ := adminDo(t, c.method, url, c.token, `{"workload":"cart.shop","caller":"x","reason":"r","ttl":"1h"}`); code != 401 {
			t.Errorf("%s: %d, want 401", c.name, code)
		}
	}
	code, body := adminDo(t, "POST", url, adminToken, `{"workload":"ghost.shop","route":"nope","expires":"2000-01-01T00:00:00Z","reason":"r"}`)
	if code != 400 {
		t.Fatalf("a bad exception: %d %s", code, body)
	}
	var refused struct{ Problems []string }
	_ = json.Unmarshal([]byte(body), &refused)
	for _, field := range []string{"workload", "route", "expires"} {
		named := false
		for _, p := range refused.Problems {
			named = named || strings.HasPrefix(p, field+":")
		}
		if !named {
			t.Errorf("the refusal does not name %s: %v", field, refused.Problems)
		}
	}

	added := time.Now()
	code, body = adminDo(t, "POST", url, adminToken, `{"id":"orders-release","workload":"cart.shop","caller":"spiffe://cluster.local/ns/shop/sa/orders","reason":"release 4.2: orders calls cart","ttl":"1h"}`)
	if code != 201 || !strings.Contains(body, `"author":"meshward:admin-token"`) {
		t.Fatalf("adding: %d %s", code, body)
	}
	eventually(t, "the exception served", func() bool { ids, _ := sc.exceptions(); return has(ids, "orders-release") })
	t.Logf("served %v after it was added", time.Since(added).Round(time.Millisecond))
	if code, _ := adminDo(t, "POST", url, adminToken, `{"id":"orders-release","workload":"cart.shop","caller":"x","reason":"r","ttl":"1h"}`); code != 409 {
		t.Errorf("an id taken: %d, want 409", code)
	}
	audited := false
	for _, l := range logs.auditLines(t) {
		audited = audited || l["msg"] == "exception added" && l["id"] == "orders-release" && l["author"] == "meshward:admin-token"
	}
	if !audited {
		t.Errorf("no audit line for the exception added:\n%v", logs.auditLines(t))
	}

	// One that expires soon: deleted by the leader, gone from the sidecar.
	if code, body := adminDo(t, "POST", url, adminToken, `{"id":"short","workload":"*","reason_code":"new_route","reason":"r","ttl":"1500ms"}`); code != 201 {
		t.Fatalf("adding the short one: %d %s", code, body)
	}
	eventually(t, "the short exception served", func() bool { ids, _ := sc.exceptions(); return has(ids, "short") })
	eventually(t, "the short exception expired", func() bool {
		_, list := adminDo(t, "GET", url, adminToken, "")
		ids, _ := sc.exceptions()
		return !strings.Contains(list, `"short"`) && !has(ids, "short")
	})
	// Listing and serving leave an expired exception out at once; the
	// leader deletes it, with its audit line, on its next tick.
	eventually(t, "an audit line for the expiry", func() bool {
		for _, l := range logs.auditLines(t) {
			if l["msg"] == "exception expired" && l["id"] == "short" {
				return true
			}
		}
		return false
	})

	// A restart loses nothing.
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := startLogged(t, redis.Addr, &lockedBuffer{})
	if _, list := adminDo(t, "GET", s2.AdminURL+"/api/v1/exceptions", adminToken, ""); !strings.Contains(list, `"orders-release"`) {
		t.Fatalf("the exception was lost across the restart: %s", list)
	}
	sc2 := connectConfig(t, s2.ADSAddr, "cart-2")
	eventually(t, "the exception served after the restart", func() bool { ids, _ := sc2.exceptions(); return has(ids, "orders-release") })

	// Revoked: gone from the sidecar; a second revoke finds nothing.
	if code, body := adminDo(t, "DELETE", s2.AdminURL+"/api/v1/exceptions/orders-release", "", ""); code != 401 {
		t.Errorf("revoking without a token: %d %s", code, body)
	}
	if code, body := adminDo(t, "DELETE", s2.AdminURL+"/api/v1/exceptions/orders-release", adminToken, ""); code != 200 {
		t.Fatalf("revoking: %d %s", code, body)
	}
	eventually(t, "the revoked exception gone from the sidecar", func() bool { ids, _ := sc2.exceptions(); return !has(ids, "orders-release") })
	if code, _ := adminDo(t, "DELETE", s2.AdminURL+"/api/v1/exceptions/orders-release", adminToken, ""); code != 404 {
		t.Errorf("revoking twice: %d, want 404", code)
	}
}

// TestLearnFirstFollowsReadiness: under -filter-learn-first with enforce
// as the mode, a workload's filters learn while its section is learning,
// monitor once it is ready for monitor, and enforce once ready for
// enforce, as each training round's assessment (stored with the release)
// says; /api/v1/workloads shows the verdict and the mode.
func TestLearnFirstFollowsReadiness(t *testing.T) {
	redis := redistest.Start(t)
	s := startWith(t, redis.Addr, func(c *Config) {
		c.XDS.LearnFirst, c.XDS.Base.Mode = true, pluginconfig.ModeEnforce
	})
	ctx := context.Background()
	A := putModel(t, s.store, testModel(t, 1))
	assess := func(verdict string) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"workload": "cart.shop", "verdict": verdict, "reason": "test", "at": time.Now()})
		if err := s.store.PutReadiness(ctx, A.version, map[string][]byte{"cart.shop": b}); err != nil {
			t.Fatal(err)
		}
	}
	assess("learning")
	if err := s.store.SetCurrent(ctx, A.version); err != nil {
		t.Fatal(err)
	}
	sc := connectConfig(t, s.ADSAddr, "cart-1")
	mode := func() pluginconfig.Mode {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.last.Mode
	}
	for _, c := range []struct {
		verdict string
		want    pluginconfig.Mode
	}{{"learning", pluginconfig.ModeLearn}, {"ready for monitor", pluginconfig.ModeMonitor}, {"ready for enforce", pluginconfig.ModeEnforce}} {
		assess(c.verdict)
		eventually(t, "mode "+string(c.want)+" when "+c.verdict, func() bool { return mode() == c.want })
		_, body := get(t, s.AdminURL+"/api/v1/workloads")
		if !strings.Contains(body, `"verdict":"`+c.verdict+`"`) || !strings.Contains(body, `"mode":"`+string(c.want)+`"`) {
			t.Errorf("workloads when %s: %s", c.verdict, body)
		}
	}
}
