package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/internal/redistest"
)

const token = "serve-test-token-0123"

func start(t *testing.T, redisAddr string) *Server {
	cfg := DefaultConfig()
	cfg.Redis, cfg.CollectorAddr, cfg.AdminAddr, cfg.CollectorToken = redisAddr, "127.0.0.1:0", "127.0.0.1:0", token
	cfg.XDSAddr, cfg.XDS.WasmURI = "127.0.0.1:0", "/etc/meshward/meshward.wasm"
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

func get(t *testing.T, url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func ship(t *testing.T, s *Server, body string) int {
	req, _ := http.NewRequest("POST", s.CollectorURL+"/v1/records", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func batch() string {
	ns := time.Now().UnixNano()
	return `{"ts_ns":` + itoa(ns) + `,"route":"/items/{num}","score":0.1,"request":{"Method":"GET","Path":"/items/{num}","Source":"frontend","Destination":"cart.shop"}}` + "\n"
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// TestServeWithRealRedis runs the control plane on a real redis-server:
// records shipped to the collector show in the edges API and the metrics;
// when Redis goes away, readiness and the collector say so.
func TestServeWithRealRedis(t *testing.T) {
	redis := redistest.Start(t)
	s := start(t, redis.Addr)
	if code, _ := get(t, s.AdminURL+"/healthz"); code != 200 {
		t.Errorf("healthz %d", code)
	}
	if code, _ := get(t, s.AdminURL+"/readyz"); code != 200 {
		t.Errorf("readyz %d", code)
	}
	if code := ship(t, s, batch()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	if code, body := get(t, s.AdminURL+"/api/v1/edges?destination=cart.shop"); code != 200 || !strings.Contains(body, `"Source":"frontend"`) {
		t.Errorf("edges: %d %s", code, body)
	}
	if _, body := get(t, s.AdminURL+"/metrics"); !strings.Contains(body, `meshward_collector_batches_total{code="200"} 1`) {
		t.Errorf("metrics lack the batch:\n%.400s", body)
	}
	redis.Stop()
	if code, _ := get(t, s.AdminURL+"/readyz"); code != 503 {
		t.Errorf("readyz with Redis gone: %d", code)
	}
	if code := ship(t, s, batch()); code != 503 {
		t.Errorf("shipping with Redis gone: %d", code)
	}
	if code, _ := get(t, s.AdminURL+"/healthz"); code != 200 {
		t.Errorf("healthz with Redis gone: %d (the process is alive)", code)
	}
}

// TestTrainOnDemand ships enough records, trains through the admin API and
// finds the published model current; rollback needs an earlier version.
func TestTrainOnDemand(t *testing.T) {
	s := start(t, "")
	var b strings.Builder
	for i := 0; i < 400; i++ {
		b.WriteString(batch())
	}
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	resp, err := http.Post(s.AdminURL+"/api/v1/train", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"published":true`) {
		t.Fatalf("train: %d %s", resp.StatusCode, body)
	}
	_, models := get(t, s.AdminURL+"/api/v1/models")
	if !strings.Contains(models, `"current":"`) || strings.Contains(models, `"current":""`) {
		t.Errorf("models: %s", models)
	}
	// The published model is what xDS now serves.
	if _, rollouts := get(t, s.AdminURL+"/api/v1/rollouts"); !strings.Contains(rollouts, `"version":"`+s.xds.Version()+`"`) || s.xds.Version() == "" ||
		!strings.Contains(models, s.xds.Version()) {
		t.Errorf("rollouts %s, models %s", rollouts, models)
	}
	resp, _ = http.Post(s.AdminURL+"/api/v1/rollback", "application/json", nil)
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("rollback with one version: %d", resp.StatusCode)
	}
}

// TestServeEmbedded runs on the embedded Redis-protocol server: one command,
// no Redis to install, same code path.
func TestServeEmbedded(t *testing.T) {
	s := start(t, "")
	if code := ship(t, s, batch()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	if code, body := get(t, s.AdminURL+"/api/v1/edges?destination=cart.shop"); code != 200 || !strings.Contains(body, "frontend") {
		t.Errorf("edges: %d %s", code, body)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CollectorToken = "short"
	if _, err := New(cfg, slog.Default()); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("bad config: %v", err)
	}
}
