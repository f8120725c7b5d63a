package runner

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"

	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/devca"
	"github.com/meshward/meshward/models/record"
	"github.com/meshward/meshward/replay/source"
)

// TestSidecarsForwardToTheCollector runs learn-mode traffic through the
// compiled filter with a collector (mTLS) that pushes back twice: the
// forwarder presents the workload's client certificate, hands the filter
// the 503s, the filter retries the same batch under the same
// Idempotency-Key after its pause, and every record arrives once, with no
// credential in the request.
func TestSidecarsForwardToTheCollector(t *testing.T) {
	const cartID = "spiffe://cluster.local/ns/shop/sa/cart"
	ca, err := devca.New("runner test")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Server("", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		refused int
		recs    []record.Record
		keys    []string
	)
	col := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/v1/records" || r.Header.Get("Authorization") != "" || len(r.TLS.PeerCertificates) == 0 ||
			r.TLS.PeerCertificates[0].URIs[0].String() != cartID {
			http.Error(w, "wrong path, identity or a credential", http.StatusUnauthorized)
			return
		}
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		if refused < 2 {
			refused++
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var rec record.Record
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Errorf("record %s: %v", sc.Bytes(), err)
			}
			recs = append(recs, rec)
		}
	}))
	col.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.Cert}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	col.StartTLS()
	defer col.Close()
	sc, err := NewSidecars(wasmPath, col.URL, wazerohost.DefaultProfile)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sc.ClientTLS = func(workload string) (*tls.Config, error) {
		l, err := ca.Client("spiffe://cluster.local/ns/shop/sa/" + strings.TrimSuffix(workload, ".shop"))
		if err != nil {
			return nil, err
		}
		return ca.ClientTLS(l), nil
	}
	train, _ := traffic()
	var cart []int
	for i, r := range train {
		if r.Request.Destination == "cart.shop" {
			cart = append(cart, i)
		}
	}
	all := 1.0
	doc, err := (&pluginconfig.Config{Mode: pluginconfig.ModeLearn, Workload: "cart.shop", CollectorCluster: "meshward-collector",
		SampleRate: &all, BatchSize: 100}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	in := make([]*source.Record, 0, len(cart))
	for _, i := range cart {
		in = append(in, train[i])
	}
	if _, err := sc.Run("cart.shop", doc, in); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if refused != 2 || sc.Batches[503] != 2 || sc.Batches[200] == 0 || sc.Dropped != 0 {
		t.Errorf("refused %d, batches %v, dropped %d", refused, sc.Batches, sc.Dropped)
	}
	if len(recs) != len(in) {
		t.Fatalf("the collector got %d records of %d requests", len(recs), len(in))
	}
	// The two pushed-back attempts and the accepted one are one batch.
	if len(keys) < 3 || keys[0] == "" || keys[1] != keys[0] || keys[2] != keys[0] {
		t.Errorf("idempotency keys of the first attempts %q, want one key, retried", keys[:min(3, len(keys))])
	}
	posts := 0
	for _, r := range recs {
		if r.Request.Destination != "cart.shop" || r.ModelSHA256 != "" {
			t.Fatalf("record %+v", r)
		}
		if r.Request.Method == "POST" && len(r.Request.Body) > 0 {
			posts++
		}
	}
	if posts == 0 {
		t.Error("no form body shape reached the collector")
	}
}
