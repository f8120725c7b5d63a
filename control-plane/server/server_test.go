package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models/record"
)

// adminToken is the admin API's static token in these tests.
const adminToken = "serve-test-admin-token-0123456789abcdef"

// testWorkloads are the workloads whose sidecars the tests ship records
// as; each gets a bearer token standing for its identity (the collector's
// token mode, for tests: production takes mTLS identities).
var testWorkloads = []string{"cart.shop", "payments.shop", "users.shop", "admin.shop", "orders.shop", "reviews.shop"}

// sidecarToken is the token of a workload's sidecar.
func sidecarToken(workload string) string {
	sum := sha256.Sum256([]byte("sidecar of " + workload))
	return hex.EncodeToString(sum[:])
}

// testConfig is the default configuration with loopback listeners, the
// collector taking the test workloads' tokens, and the admin token.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.CollectorAddr, cfg.AdminAddr, cfg.XDSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Collector.Identity, cfg.Collector.Tokens = collector.ModeToken, map[string]string{}
	b := identity.Binding{TrustDomain: cfg.TrustDomain}
	for _, w := range testWorkloads {
		id, _ := b.Identity(w)
		cfg.Collector.Tokens[sidecarToken(w)] = id
	}
	cfg.Auth.Token = []byte(adminToken)
	return cfg
}

// adminPost POSTs to the admin API with the admin token.
func adminPost(url string) (*http.Response, error) {
	req, _ := http.NewRequest("POST", url, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	return http.DefaultClient.Do(req)
}

func start(t *testing.T, redisAddr string) *Server {
	cfg := testConfig()
	cfg.Redis, cfg.CollectorAddr, cfg.AdminAddr = redisAddr, "127.0.0.1:0", "127.0.0.1:0"
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

// get GETs from the admin API with the admin token.
func get(t *testing.T, url string) (int, string) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ship ships records as their destinations' sidecars do (one batch per
// destination, each with its sidecar's token) and returns the first status
// other than 200, else 200.
func ship(t *testing.T, s *Server, body string) int {
	code, _ := shipAnswer(t, s, body)
	return code
}

// shipRaw sends body as it is, as dst's sidecar, and returns the status.
func shipRaw(t *testing.T, s *Server, dst, body string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", s.CollectorURL+"/v1/records", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+sidecarToken(dst))
	req.Header.Set(record.IdempotencyKeyHeader, fmt.Sprintf("server-test-%016d", batchKeys.Add(1)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// batchKeys numbers the tests' batches.
var batchKeys atomic.Int64

// shipAnswer is ship, with the Retry-After of the first refusal.
func shipAnswer(t *testing.T, s *Server, body string) (int, string) {
	t.Helper()
	byDst := map[string]*strings.Builder{}
	var order []string
	for _, line := range strings.SplitAfter(body, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var r record.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("a test record: %v: %s", err, line)
		}
		d := r.Request.Destination
		if byDst[d] == nil {
			byDst[d] = &strings.Builder{}
			order = append(order, d)
		}
		byDst[d].WriteString(line)
	}
	for _, d := range order {
		req, _ := http.NewRequest("POST", s.CollectorURL+"/v1/records", strings.NewReader(byDst[d].String()))
		req.Header.Set("Authorization", "Bearer "+sidecarToken(d))
		req.Header.Set(record.IdempotencyKeyHeader, fmt.Sprintf("server-test-%016d", batchKeys.Add(1)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return resp.StatusCode, resp.Header.Get("Retry-After")
		}
	}
	return 200, ""
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
	resp, err := adminPost(s.AdminURL + "/api/v1/train")
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
	resp, _ = adminPost(s.AdminURL + "/api/v1/rollback")
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

// serve refuses to start without a way to know the collector's senders,
// or to authenticate the admin API's callers, naming the flags.
func TestServeRefusesBadConfig(t *testing.T) {
	for name, c := range map[string]struct {
		change func(*Config)
		want   string
	}{
		"collector in tls mode without certificates": {func(c *Config) { c.Collector.Identity = collector.ModeTLS }, "-collector-identity=tls needs -collector-cert"},
		"a short collector token":                    {func(c *Config) { c.Collector.Tokens = map[string]string{"short": "spiffe://cluster.local/ns/a/sa/b"} }, "at least 32"},
		"no admin credentials":                       {func(c *Config) { c.Auth.Token = nil }, "-admin-token-file"},
		"a short admin token":                        {func(c *Config) { c.Auth.Token = []byte("short") }, "at least 32"},
		"xDS in tls mode without a client CA": {func(c *Config) {
			c.XDS.WasmURI, c.XDS.Identity = "/m.wasm", "tls"
		}, "-xds-identity=tls needs"},
		"batch keys kept shorter than the skew": {func(c *Config) { c.Store.BatchTTL = time.Minute }, "-collector-max-skew"},
	} {
		cfg := testConfig()
		c.change(&cfg)
		if _, err := New(cfg, slog.Default()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// A sender that announces a batch and stalls is cut at the collector's read
// timeout through serve's own listener (the deadline reaches the
// connection through serve's wrappers), and counted.
func TestServeCutsAStalledSender(t *testing.T) {
	s := startWith(t, "", func(c *Config) { c.Collector.ReadTimeout = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.CollectorURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A bound on the test, not a wait: the answer comes at 300 ms.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "POST /v1/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s: stalled-batch-0000001\r\nContent-Length: 100000\r\n\r\n{", sidecarToken("cart.shop"), record.IdempotencyKeyHeader)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("a stalled sender: %d, want 408", resp.StatusCode)
	}
	if n := scrape(t, s, `meshward_collector_batches_refused_total{reason="read_timeout"}`); n != 1 {
		t.Errorf("read timeouts counted %v, want 1", n)
	}
}
