package runner

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"

	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/replay/source"
)

// TestSidecarsForwardToTheCollector runs learn-mode traffic through the
// compiled filter with a collector that pushes back twice: the forwarder
// hands the filter the 503s, the filter retries after its pause, and every
// record arrives once, with the token the filter was configured with.
func TestSidecarsForwardToTheCollector(t *testing.T) {
	const token = "sidecar-test-token-0123"
	var (
		mu      sync.Mutex
		refused int
		recs    []store.Record
	)
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/v1/records" || r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "wrong path or token", http.StatusUnauthorized)
			return
		}
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
			var rec store.Record
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Errorf("record %s: %v", sc.Bytes(), err)
			}
			recs = append(recs, rec)
		}
	}))
	defer col.Close()
	sc, err := NewSidecars(wasmPath, col.URL, wazerohost.DefaultProfile)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	train, _ := traffic()
	var cart []int
	for i, r := range train {
		if r.Request.Destination == "cart.shop" {
			cart = append(cart, i)
		}
	}
	all := 1.0
	doc, err := (&pluginconfig.Config{Mode: pluginconfig.ModeLearn, Workload: "cart.shop", CollectorCluster: "meshward-collector",
		CollectorToken: token, SampleRate: &all, BatchSize: 100}).Encode()
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
