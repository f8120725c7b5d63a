package collector

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshward/meshward/models"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/internal/devca"
	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models/record"
)

// Identities of the tests: the cart workload's sidecar (cart.shop) and the
// orders workload's (orders.shop).
const (
	cart   = "spiffe://cluster.local/ns/shop/sa/cart"
	orders = "spiffe://cluster.local/ns/shop/sa/orders"
)

// now is the collector's clock in these tests.
var now = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// Bearer tokens of the tests (token mode), each bound to an identity.
var (
	cartToken   = strings.Repeat("c", 40)
	ordersToken = strings.Repeat("o", 40)
)

type fixture struct {
	url string
	st  *store.Store
	srv *redistest.Server
	col *Collector
}

func setup(t *testing.T, cfg Config) *fixture {
	return setupWith(t, cfg, func(i Ingester) Ingester { return i })
}

// setupWith runs a collector in token mode on a real redis-server.
func setupWith(t *testing.T, cfg Config, wrap func(Ingester) Ingester) *fixture {
	srv := redistest.Start(t)
	st, err := store.New(srv.Client(t), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Identity, cfg.Tokens = ModeToken, map[string]string{cartToken: cart, ordersToken: orders}
	c, err := New(cfg, wrap(st))
	if err != nil {
		t.Fatal(err)
	}
	c.SetClock(func() time.Time { return now })
	hs := httptest.NewServer(c)
	t.Cleanup(hs.Close)
	return &fixture{url: hs.URL, st: st, srv: srv, col: c}
}

func line(dst, path string, score float64) string {
	return fmt.Sprintf(`{"ts":%q,"request":{"Method":"GET","Path":%q,"Source":"spiffe://cluster.local/ns/shop/sa/frontend","Destination":%q},"route":%q,"score":%v}`,
		now.Format(time.RFC3339), path, dst, path, score)
}

var keys atomic.Int64

// newKey is a fresh idempotency key.
func newKey() string { return fmt.Sprintf("test-batch-%016d", keys.Add(1)) }

func post(t *testing.T, url, tok, key, body string) (int, Response, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if key != "" {
		req.Header.Set(record.IdempotencyKeyHeader, key)
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

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

func refused(c *Collector, reason string) float64 { return value(c.refused.WithLabelValues(reason)) }
func batchRefused(c *Collector, reason string) float64 {
	return value(c.batches.WithLabelValues(reason))
}

func edgeCount(t *testing.T, st *store.Store, dst string) int64 {
	t.Helper()
	edges, err := st.Edges(context.Background(), dst, now)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range edges {
		n += e.Count
	}
	return n
}

func TestCollector(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBatchBytes = 64 << 10
	f := setup(t, cfg)
	good := line("cart.shop", "/items", 0.1) + "\n" + line("cart.shop", "/items", 0.2) + "\n"
	if code, _, _ := post(t, f.url, "", newKey(), good); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, _, _ := post(t, f.url, strings.Repeat("w", 40), newKey(), good); code != 401 {
		t.Errorf("wrong token: %d", code)
	}
	if code, _, _ := post(t, f.url, cartToken, "", good); code != 400 {
		t.Errorf("no idempotency key: %d", code)
	}
	if n := batchRefused(f.col, BatchUnauthenticated); n != 2 {
		t.Errorf("unauthenticated batches counted %v, want 2", n)
	}
	code, r, _ := post(t, f.url, cartToken, newKey(), good)
	if code != 200 || r.Accepted != 2 {
		t.Errorf("good batch: %d %+v", code, r)
	}
	// A bad record does not lose the good ones; the answer says which line.
	mixed := line("cart.shop", "/items", 0.3) + "\nnot json\n" + line("cart.shop", "no-slash", 0.1) + "\n" + line("cart.shop", "/items", 7) + "\n"
	code, r, _ = post(t, f.url, cartToken, newKey(), mixed)
	if code != 400 || r.Accepted != 1 || r.Rejected != 3 || !strings.Contains(strings.Join(r.Errors, ";"), "line 2") || !strings.Contains(strings.Join(r.Errors, ";"), "line 4: score") {
		t.Errorf("mixed batch: %d %+v", code, r)
	}
	if n := edgeCount(t, f.st, "cart.shop"); n != 3 {
		t.Errorf("stored edges %d, want the 3 good records", n)
	}
	if code, _, _ := post(t, f.url, cartToken, newKey(), strings.Repeat(good, 1000)); code != 413 {
		t.Errorf("oversized batch: %d", code)
	}
	resp, _ := http.Get(f.url)
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}

// TestRecordsBoundToTheSender: a sender's records are accepted only about
// its own workload, timestamped near the collector's clock, with a sample
// rate that stands for at most 1,000 requests; every refusal is counted by
// reason, and nothing refused reaches the store.
func TestRecordsBoundToTheSender(t *testing.T) {
	f := setup(t, DefaultConfig())
	at := func(ts time.Time, extra string) string {
		return fmt.Sprintf(`{"ts":%q,"request":{"Method":"GET","Path":"/a","Source":"spiffe://cluster.local/ns/shop/sa/frontend","Destination":"cart.shop"},"route":"/a","score":0.1%s}`, ts.Format(time.RFC3339Nano), extra)
	}
	cases := []struct {
		name, tok, body, reason string
	}{
		{"another workload's records", ordersToken, line("cart.shop", "/a", 0.1), RefusedNotSender},
		{"a workload of another namespace", cartToken, line("cart.other", "/a", 0.1), RefusedNotSender},
		{"far in the future", cartToken, at(now.Add(6*time.Minute), ""), RefusedSkew},
		{"far in the past", cartToken, at(now.Add(-time.Hour), ""), RefusedSkew},
		{"year 9999", cartToken, at(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), ""), RefusedSkew},
		{"sample rate 5e-324", cartToken, at(now, `,"sample_rate":5e-324`), RefusedSampleRate},
		{"sample rate 0.0009", cartToken, at(now, `,"sample_rate":0.0009`), RefusedSampleRate},
		{"sample rate above one", cartToken, at(now, `,"sample_rate":1.5`), RefusedSampleRate},
		{"negative sample rate", cartToken, at(now, `,"sample_rate":-1`), RefusedSampleRate},
		{"negative response bytes", cartToken, strings.Replace(at(now, ""), `"Destination"`, `"ResponseBytes":-5,"Destination"`, 1), RefusedInvalid},
		{"status 999", cartToken, strings.Replace(at(now, ""), `"Destination"`, `"Status":999,"Destination"`, 1), RefusedInvalid},
		{"a method that is not a token", cartToken, strings.Replace(at(now, ""), `"GET"`, `"GET /x"`, 1), RefusedInvalid},
		{"score above one", cartToken, at(now, `,"flagged":true`)[:0] + line("cart.shop", "/a", 2), RefusedInvalid},
		{"a query longer than a filter reads", cartToken, strings.Replace(at(now, ""), `"Destination"`, `"Query":"q=`+strings.Repeat("a", models.MaxShippedQuery)+`","Destination"`, 1), RefusedInvalid},
		{"a negative FormBytes", cartToken, strings.Replace(at(now, ""), `"Destination"`, `"Body":"`+shippedBody(10)+`","FormBytes":-1,"Destination"`, 1), RefusedInvalid},
		{"FormBytes without a body", cartToken, strings.Replace(at(now, ""), `"Destination"`, `"FormBytes":70000,"Destination"`, 1), RefusedInvalid},
		{"a body longer than a filter ships", cartToken, strings.Replace(at(now, ""), `"Destination"`, `"Body":"`+shippedBody(models.MaxShippedBody+1)+`","Destination"`, 1), RefusedInvalid},
		{"more headers than a filter ships", cartToken, strings.Replace(at(now, ""), `"Destination"`, `"Headers":`+manyHeaders(models.MaxShippedHeaders+1)+`,"Destination"`, 1), RefusedInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := refused(f.col, c.reason)
			code, r, _ := post(t, f.url, c.tok, newKey(), c.body+"\n")
			if code != 400 || r.Accepted != 0 || r.Rejected != 1 {
				t.Errorf("%d %+v, want 400 with the record refused", code, r)
			}
			if got := refused(f.col, c.reason) - before; got != 1 {
				t.Errorf("refusals for %s: +%v, want +1 (%v)", c.reason, got, r.Errors)
			}
		})
	}
	if n := edgeCount(t, f.st, "cart.shop"); n != 0 {
		t.Errorf("%d refused records reached the store", n)
	}
	// Within the window, and at the smallest rate: accepted.
	ok := at(now.Add(4*time.Minute), `,"sample_rate":0.001`) + "\n" + at(now.Add(-4*time.Minute), "") + "\n" +
		strings.Replace(at(now, ""), `"Destination"`, `"Headers":`+manyHeaders(models.MaxShippedHeaders)+`,"Destination"`, 1) + "\n" +
		strings.Replace(at(now, ""), `"Destination"`, `"Body":"`+shippedBody(models.MaxShippedBody)+`","FormBytes":70000,"Destination"`, 1) + "\n" +
		// The shape of a query of 64 KiB of symbols (what the filter
		// reads of :path by default), three bytes each.
		strings.Replace(at(now, ""), `"Destination"`, `"Query":"`+string(models.AppendShapeQuery(nil, strings.Repeat("q="+strings.Repeat("!", 4090)+"&", 16)))+`","Destination"`, 1)
	if code, r, _ := post(t, f.url, cartToken, newKey(), ok); code != 200 || r.Accepted != 5 {
		t.Errorf("records within bounds: %d %+v", code, r)
	}
}

// shippedBody is a body of n bytes as a record carries it (base64).
func shippedBody(n int) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", n)))
}

// manyHeaders is n headers as a record carries them (JSON).
func manyHeaders(n int) string {
	hs := make([]string, n)
	for i := range hs {
		hs[i] = fmt.Sprintf(`{"Name":"x-h%d","Value":"a"}`, i)
	}
	return "[" + strings.Join(hs, ",") + "]"
}

// TestRetriedBatchCountedOnce: a batch sent again under its key (the
// sender's retry) is answered as a duplicate and counted once; the same key
// from another sender is another batch.
func TestRetriedBatchCountedOnce(t *testing.T) {
	f := setup(t, DefaultConfig())
	body := line("cart.shop", "/items", 0.1) + "\n" + line("cart.shop", "/items", 0.2) + "\n"
	key := newKey()
	for i := 0; i < 3; i++ {
		code, r, _ := post(t, f.url, cartToken, key, body)
		if code != 200 || r.Duplicate != (i > 0) || r.Accepted != map[bool]int{true: 0, false: 2}[i > 0] {
			t.Errorf("attempt %d: %d %+v", i+1, code, r)
		}
	}
	if n := edgeCount(t, f.st, "cart.shop"); n != 2 {
		t.Errorf("edges counted %d, want 2 (one batch)", n)
	}
	if d := value(f.col.records.WithLabelValues("duplicate")); d != 4 {
		t.Errorf("duplicate records counted %v, want 4", d)
	}
	body = line("orders.shop", "/o", 0.1) + "\n"
	if code, r, _ := post(t, f.url, ordersToken, key, body); code != 200 || r.Duplicate || r.Accepted != 1 {
		t.Errorf("the same key from another sender: %d %+v", code, r)
	}
}

func TestStoreDownIs503(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StoreTimeout = 2 * time.Second
	f := setup(t, cfg)
	f.srv.Stop()
	code, r, h := post(t, f.url, cartToken, newKey(), line("cart.shop", "/", 0)+"\n")
	if code != 503 || h.Get("Retry-After") == "" || len(r.Errors) == 0 {
		t.Errorf("Redis down: %d %+v retry-after %q", code, r, h.Get("Retry-After"))
	}
}

// entering reports when a batch has reached the (real) store, and holds it
// there until released.
type entering struct {
	Ingester
	entered chan struct{}
	release chan struct{}
	n       atomic.Int64
}

func (e *entering) IngestBatch(ctx context.Context, b store.Batch) (bool, error) {
	e.n.Add(1)
	e.entered <- struct{}{}
	<-e.release
	return e.Ingester.IngestBatch(ctx, b)
}

// TestBackpressure: a batch holds the only slot while the store is stuck;
// the next batch finds no free slot and is told to retry, before its body
// is read.
func TestBackpressure(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxInFlight = 1
	e := &entering{entered: make(chan struct{}, 1), release: make(chan struct{})}
	f := setupWith(t, cfg, func(i Ingester) Ingester { e.Ingester = i; return e })
	var wg sync.WaitGroup
	wg.Add(1)
	var first int
	go func() {
		defer wg.Done()
		first, _, _ = post(t, f.url, cartToken, newKey(), line("cart.shop", "/", 0)+"\n")
	}()
	<-e.entered // the first batch holds the only slot
	code, _, h := post(t, f.url, cartToken, newKey(), line("cart.shop", "/", 0)+"\n")
	if code != 503 || h.Get("Retry-After") == "" {
		t.Errorf("second batch while the store is stuck: %d, Retry-After %q", code, h.Get("Retry-After"))
	}
	close(e.release)
	wg.Wait()
	if first != 200 {
		t.Errorf("the first batch ended with %d once the store resumed", first)
	}
	if n := batchRefused(f.col, BatchBusy); n != 1 {
		t.Errorf("busy refusals %v, want 1", n)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]struct {
		cfg  Config
		want string
	}{
		"no mode":            {Config{}, "-collector-identity"},
		"short token":        {Config{Identity: ModeToken, Tokens: map[string]string{"short": cart}}, "at least 32"},
		"token for nobody":   {Config{Identity: ModeToken, Tokens: map[string]string{cartToken: "cart.shop"}}, "not a SPIFFE ID"},
		"tokens in tls mode": {Config{Identity: ModeTLS, Tokens: map[string]string{cartToken: cart}}, "only for -collector-identity=token"},
	} {
		c.cfg.MaxBatchBytes, c.cfg.MaxRecords, c.cfg.MaxInFlight = 1<<20, 10, 1
		c.cfg.ReadTimeout, c.cfg.StoreTimeout, c.cfg.RetryAfter, c.cfg.MaxSkew = time.Second, time.Second, time.Second, time.Minute
		if _, err := New(c.cfg, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// TestVersionFields: a record says which model section scored it and at
// what share it was sampled; a malformed version or rate is refused by
// line, and the good records of the batch are counted.
func TestVersionFields(t *testing.T) {
	f := setup(t, DefaultConfig())
	sha := strings.Repeat("0f", 32)
	rec := func(extra string) string {
		return `{"ts":"2026-11-25T10:00:00Z","request":{"Method":"GET","Path":"/a","Source":"frontend","Destination":"cart.shop"},"route":"/a",` + extra + `}`
	}
	good := rec(`"score":0.1,"model":"` + sha + `","sample_rate":0.25`)
	flagged := rec(`"score":0.9,"flagged":true,"model":"` + sha + `"`)
	badSHA := rec(`"score":0.1,"model":"v1"`)
	badRate := rec(`"score":0.1,"model":"` + sha + `","sample_rate":2`)
	code, resp, _ := post(t, f.url, cartToken, newKey(), strings.Join([]string{good, badSHA, flagged, badRate}, "\n"))
	if code != 400 || resp.Accepted != 2 || resp.Rejected != 2 ||
		!strings.Contains(strings.Join(resp.Errors, ";"), "line 2: model") || !strings.Contains(strings.Join(resp.Errors, ";"), "line 4: sample_rate") {
		t.Fatalf("%d %+v", code, resp)
	}
	v, err := f.st.Verdicts(context.Background(), now, now)
	if err != nil || v[store.VerdictsAll].Requests != 5 || v[store.VerdictsAll].Flagged != 1 {
		t.Errorf("verdicts %+v (%v): want 1 flagged of 5 (the unflagged record stands for 4)", v, err)
	}
}

// TestIdentityFromTheMesh: in tls mode the sender is its verified client
// certificate's SPIFFE ID (a client without one does not get through the
// handshake); in xfcc mode, the one element of the header the sidecar set
// (a client's own element beside it is refused).
func TestIdentityFromTheMesh(t *testing.T) {
	srv := redistest.Start(t)
	st, err := store.New(srv.Client(t), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := devca.New("mesh")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Server("", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	c, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	c.SetClock(func() time.Time { return now })
	hs := httptest.NewUnstartedServer(c)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.Cert}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	send := func(client *http.Client, body string) (int, error) {
		req, _ := http.NewRequest("POST", hs.URL, strings.NewReader(body))
		req.Header.Set(record.IdempotencyKeyHeader, newKey())
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	withCert := func(id string) *http.Client {
		var l *devca.Leaf
		if id != "" {
			if l, err = ca.Client(id); err != nil {
				t.Fatal(err)
			}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientTLS(l)}}
	}
	if code, err := send(withCert(cart), line("cart.shop", "/a", 0.1)); err != nil || code != 200 {
		t.Errorf("cart's sidecar about cart: %d %v", code, err)
	}
	if code, err := send(withCert(orders), line("cart.shop", "/a", 0.1)); err != nil || code != 400 {
		t.Errorf("orders' sidecar about cart: %d %v", code, err)
	}
	if _, err := send(withCert(""), line("cart.shop", "/a", 0.1)); err == nil {
		t.Errorf("a client without a certificate got through the handshake")
	}
	other, err := devca.New("another mesh")
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.Client(cart)
	tc := ca.ClientTLS(nil)
	tc.Certificates = []tls.Certificate{forged.Cert}
	if _, err := send(&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, line("cart.shop", "/a", 0.1)); err == nil {
		t.Errorf("a certificate of another CA got through the handshake")
	}
	if n := edgeCount(t, st, "cart.shop"); n != 1 {
		t.Errorf("edges %d, want 1 (cart's own record)", n)
	}

	// xfcc mode, behind the sidecar.
	cfg.Identity = ModeXFCC
	cx, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	cx.SetClock(func() time.Time { return now })
	xs := httptest.NewServer(cx)
	t.Cleanup(xs.Close)
	xfcc := func(h string) int {
		req, _ := http.NewRequest("POST", xs.URL, strings.NewReader(line("cart.shop", "/a", 0.1)))
		req.Header.Set(record.IdempotencyKeyHeader, newKey())
		if h != "" {
			req.Header.Set("X-Forwarded-Client-Cert", h)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	set := "By=spiffe://cluster.local/ns/meshward-system/sa/meshward;Hash=ab;URI=" + cart
	if code := xfcc(set); code != 200 {
		t.Errorf("the sidecar's element: %d", code)
	}
	if code := xfcc("URI=" + cart + "," + "By=x;URI=" + orders); code != 401 {
		t.Errorf("a client's element beside the sidecar's: %d", code)
	}
	if code := xfcc(""); code != 401 {
		t.Errorf("no header: %d", code)
	}
	if n := batchRefused(cx, BatchUnauthenticated); n != 2 {
		t.Errorf("unauthenticated %v, want 2", n)
	}
}

// The metrics register.
func TestCollectorsRegister(t *testing.T) {
	c, err := New(Config{Identity: ModeXFCC, MaxBatchBytes: 1 << 20, MaxRecords: 1, MaxInFlight: 1, ReadTimeout: time.Second,
		StoreTimeout: time.Second, RetryAfter: time.Second, MaxSkew: time.Minute, Binding: identity.Binding{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	prometheus.NewRegistry().MustRegister(c.Collectors()...)
}

// gate holds every batch that reaches the store until released, so the
// admitted batches keep their slots while the test looks.
type gate struct {
	Ingester
	entered chan struct{}
	release chan struct{}
}

func (g *gate) IngestBatch(ctx context.Context, b store.Batch) (bool, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Ingester.IngestBatch(ctx, b)
}

// TestAdmissionBoundsMemory: 64 senders post 4 MiB batches at once to a
// collector that admits 8 (its in-flight slots). The 8 admitted are read
// and held in the store; the 56 others are refused with 503 before a byte
// of their bodies is read, and counted as busy. The collector's live heap
// stays within its bound (8 × 4 MiB × 4) while the 8 are held.
func TestAdmissionBoundsMemory(t *testing.T) {
	const senders, slots, size = 64, 8, 4 << 20
	cfg := DefaultConfig()
	cfg.MaxInFlight, cfg.MaxBatchBytes, cfg.MaxRecords, cfg.StoreTimeout = slots, size, 100_000, time.Minute
	g := &gate{entered: make(chan struct{}, senders), release: make(chan struct{})}
	f := setupWith(t, cfg, func(i Ingester) Ingester { g.Ingester = i; return g })
	// What the collector reads of each refused batch's body.
	var readOfRefused atomic.Int64
	counted := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cr := &countingReader{r: r.Body}
		r.Body = cr
		rec := &recorder{ResponseWriter: w}
		f.col.ServeHTTP(rec, r)
		if rec.code == http.StatusServiceUnavailable {
			readOfRefused.Add(cr.n)
		}
	}))
	t.Cleanup(counted.Close)
	// One 4 MiB body of good records, shared by every sender (the senders'
	// memory is not the collector's).
	var b strings.Builder
	rec := line("cart.shop", "/items", 0.1) + "\n"
	for b.Len()+len(rec) <= size {
		b.WriteString(rec)
	}
	body := []byte(b.String())
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: senders}}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	codes := make(chan int, senders)
	for i := 0; i < senders; i++ {
		go func() {
			req, _ := http.NewRequest("POST", counted.URL, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+cartToken)
			req.Header.Set(record.IdempotencyKeyHeader, newKey())
			resp, err := client.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	// The 8 admitted batches reach the store, the 56 others are answered.
	busy := 0
	for entered, answered := 0, 0; entered < slots || answered < senders-slots; {
		select {
		case <-g.entered:
			entered++
		case c := <-codes:
			answered++
			// A sender still writing its body when the collector answers
			// and closes may see the connection reset instead (0).
			if c == http.StatusServiceUnavailable || c == 0 {
				busy++
			} else {
				t.Errorf("a batch beyond the slots answered %d", c)
			}
		}
	}
	runtime.GC()
	var held runtime.MemStats
	runtime.ReadMemStats(&held)
	close(g.release)
	for i := 0; i < slots; i++ {
		if c := <-codes; c != 200 {
			t.Errorf("an admitted batch answered %d", c)
		}
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if busy != senders-slots || batchRefused(f.col, BatchBusy) != float64(senders-slots) {
		t.Errorf("busy answers %d, counted %v; want %d", busy, batchRefused(f.col, BatchBusy), senders-slots)
	}
	bound := uint64(slots * size * 4)
	if live := int64(held.HeapAlloc) - int64(before.HeapAlloc); live > int64(bound) {
		t.Errorf("live heap grew by %d MiB while %d batches were held, bound %d MiB", live>>20, slots, bound>>20)
	}
	// The refused batches were answered before their bodies were read.
	if n := readOfRefused.Load(); n != 0 {
		t.Errorf("the collector read %d bytes of the batches it refused", n)
	}
	t.Logf("%d × %d MiB batches, %d slots: live heap +%d MiB while held, %d MiB allocated in all", senders, size>>20, slots,
		(int64(held.HeapAlloc)-int64(before.HeapAlloc))>>20, (after.TotalAlloc-before.TotalAlloc)>>20)
}

// TestSlowSenderTimesOut: a sender that announces a body and stalls holds
// its slot no longer than the read timeout; it is answered 408, counted,
// and the slot serves the next batch.
func TestSlowSenderTimesOut(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxInFlight, cfg.ReadTimeout = 1, 300*time.Millisecond
	f := setup(t, cfg)
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s: %s\r\nContent-Length: 100000\r\n\r\n{\"ts\":", cartToken, record.IdempotencyKeyHeader, newKey())
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || batchRefused(f.col, BatchReadTimeout) != 1 {
		t.Errorf("a stalled sender: %d, read timeouts counted %v", resp.StatusCode, batchRefused(f.col, BatchReadTimeout))
	}
	if code, r, _ := post(t, f.url, cartToken, newKey(), line("cart.shop", "/a", 0.1)); code != 200 || r.Accepted != 1 {
		t.Errorf("the next batch: %d %+v", code, r)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// recorder remembers the status written.
type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }

// The collector sets its read deadline through the wrapper.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
