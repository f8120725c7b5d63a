package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/internal/redistest"
)

const token = "test-token-0123456789"

func setup(t *testing.T, cfg Config) (*httptest.Server, *store.Store, *redistest.Server) {
	return setupWith(t, cfg, func(i Ingester) Ingester { return i })
}

func setupWith(t *testing.T, cfg Config, wrap func(Ingester) Ingester) (*httptest.Server, *store.Store, *redistest.Server) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	st, err := store.New(rdb, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Token = token
	c, err := New(cfg, wrap(st))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(c)
	t.Cleanup(hs.Close)
	return hs, st, srv
}

func line(dst, path string, score float64) string {
	return fmt.Sprintf(`{"ts":"2026-11-25T10:00:00Z","request":{"Method":"GET","Path":%q,"Source":"frontend","Destination":%q},"route":%q,"score":%v}`, path, dst, path, score)
}

func post(t *testing.T, url, tok, body string) (int, Response, http.Header) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r Response
	_ = json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r, resp.Header
}

func TestCollector(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBatchBytes = 64 << 10
	hs, st, _ := setup(t, cfg)
	good := line("cart.shop", "/items", 0.1) + "\n" + line("cart.shop", "/items", 0.2) + "\n"
	if code, _, _ := post(t, hs.URL, "", good); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, _, _ := post(t, hs.URL, "wrong-token-0123456789", good); code != 401 {
		t.Errorf("wrong token: %d", code)
	}
	code, r, _ := post(t, hs.URL, token, good)
	if code != 200 || r.Accepted != 2 {
		t.Errorf("good batch: %d %+v", code, r)
	}
	// A bad record does not lose the good ones; the answer says which line.
	mixed := line("cart.shop", "/items", 0.3) + "\nnot json\n" + line("cart.shop", "no-slash", 0.1) + "\n" + line("cart.shop", "/items", 7) + "\n"
	code, r, _ = post(t, hs.URL, token, mixed)
	if code != 400 || r.Accepted != 1 || r.Rejected != 3 || !strings.Contains(strings.Join(r.Errors, ";"), "line 2") || !strings.Contains(strings.Join(r.Errors, ";"), "line 4: score") {
		t.Errorf("mixed batch: %d %+v", code, r)
	}
	edges, _ := st.Edges(context.Background(), "cart.shop", time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
	if len(edges) != 1 || edges[0].Count != 3 {
		t.Errorf("stored edges %+v, want the 3 good records", edges)
	}
	if code, _, _ := post(t, hs.URL, token, strings.Repeat(good, 1000)); code != 413 {
		t.Errorf("oversized batch: %d", code)
	}
	resp, _ := http.Get(hs.URL)
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}

func TestStoreDownIs503(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StoreTimeout = 2 * time.Second
	hs, _, srv := setup(t, cfg)
	srv.Stop()
	code, r, h := post(t, hs.URL, token, line("a.b", "/", 0)+"\n")
	if code != 503 || h.Get("Retry-After") == "" || len(r.Errors) == 0 {
		t.Errorf("Redis down: %d %+v retry-after %q", code, r, h.Get("Retry-After"))
	}
}

// entering reports when a batch has reached the (real) store.
type entering struct {
	Ingester
	entered chan struct{}
	once    sync.Once
}

func (e *entering) Ingest(ctx context.Context, recs []store.Record) error {
	e.once.Do(func() { close(e.entered) })
	return e.Ingester.Ingest(ctx, recs)
}

// TestBackpressure pauses the real Redis so a batch hangs in the store; the
// next batch finds no free slot and is told to retry.
func TestBackpressure(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxInFlight = 1
	cfg.StoreTimeout = 5 * time.Second
	e := &entering{entered: make(chan struct{})}
	hs, _, srv := setupWith(t, cfg, func(i Ingester) Ingester { e.Ingester = i; return e })
	rdb := srv.Client(t)
	if err := rdb.Do(context.Background(), "CLIENT", "PAUSE", "2000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var first int
	go func() {
		defer wg.Done()
		first, _, _ = post(t, hs.URL, token, line("a.b", "/", 0)+"\n")
	}()
	<-e.entered // the first batch holds the only slot, waiting on Redis
	code, _, h := post(t, hs.URL, token, line("a.b", "/", 0)+"\n")
	if code != 503 || h.Get("Retry-After") == "" {
		t.Errorf("second batch while the store is stuck: %d, Retry-After %q", code, h.Get("Retry-After"))
	}
	wg.Wait()
	if first != 200 {
		t.Errorf("the first batch ended with %d once Redis resumed", first)
	}
}

func TestConfigValidate(t *testing.T) {
	if _, err := New(Config{Token: "short"}, nil); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("bad config: %v", err)
	}
}

// TestVersionFields: a record says which model section scored it and at
// what share it was sampled; a malformed version or rate is refused by
// line, and the good records of the batch are counted.
func TestVersionFields(t *testing.T) {
	hs, st, _ := setup(t, DefaultConfig())
	sha := strings.Repeat("0f", 32)
	good := `{"ts":"2026-11-25T10:00:00Z","request":{"Method":"GET","Path":"/a","Source":"frontend","Destination":"cart"},"route":"/a","score":0.1,"model":"` + sha + `","sample_rate":0.25}`
	flagged := `{"ts":"2026-11-25T10:00:00Z","request":{"Method":"GET","Path":"/a","Source":"frontend","Destination":"cart"},"route":"/a","score":0.9,"flagged":true,"model":"` + sha + `"}`
	badSHA := `{"ts":"2026-11-25T10:00:00Z","request":{"Method":"GET","Path":"/a","Source":"frontend","Destination":"cart"},"route":"/a","score":0.1,"model":"v1"}`
	badRate := `{"ts":"2026-11-25T10:00:00Z","request":{"Method":"GET","Path":"/a","Source":"frontend","Destination":"cart"},"route":"/a","score":0.1,"model":"` + sha + `","sample_rate":2}`
	code, resp, _ := post(t, hs.URL, token, strings.Join([]string{good, badSHA, flagged, badRate}, "\n"))
	if code != 400 || resp.Accepted != 2 || resp.Rejected != 2 ||
		!strings.Contains(strings.Join(resp.Errors, ";"), "line 2: model") || !strings.Contains(strings.Join(resp.Errors, ";"), "line 4: sample_rate") {
		t.Fatalf("%d %+v", code, resp)
	}
	ts := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	v, err := st.Verdicts(context.Background(), ts, ts)
	if err != nil || v[store.VerdictsAll].Requests != 5 || v[store.VerdictsAll].Flagged != 1 {
		t.Errorf("verdicts %+v (%v): want 1 flagged of 5 (the unflagged record stands for 4)", v, err)
	}
}
