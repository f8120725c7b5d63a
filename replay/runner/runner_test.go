package runner

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"

	"github.com/meshward/meshward/filter/wasmbuild"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

// wasmPath is $MESHWARD_WASM (make test sets it), else a fresh build.
var wasmPath string

func TestMain(m *testing.M) {
	wasmPath = os.Getenv("MESHWARD_WASM")
	if wasmPath == "" {
		dir, err := os.MkdirTemp("", "meshward-runner")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		wasmPath = filepath.Join(dir, "meshward.wasm")
		if err := wasmbuild.Build(wasmPath, "../../filter", wasmbuild.Options{}); err != nil {
			fmt.Fprintf(os.Stderr, "building the filter: %v\n", err)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// traffic is a small mesh: three destinations, their callers, parameters,
// headers and form bodies, plus anomalies of every kind.
func traffic() (train, replay []*source.Record) {
	rec := func(src, dst, method, path, query, body string) *source.Record {
		r := &source.Record{Request: models.Request{Method: method, Path: path, Query: query, Source: src, Destination: dst,
			Headers: []models.Header{{Name: "user-agent", Value: "client/1.0"}, {Name: "accept", Value: "application/json"}}}}
		if body != "" {
			r.Request.Body = []byte(body)
			r.Request.Headers = append(r.Request.Headers, models.Header{Name: "content-type", Value: "application/x-www-form-urlencoded"})
		}
		return r
	}
	dsts := []string{"cart.shop", "orders.shop", "users.shop"}
	for i := 0; i < 900; i++ {
		d := dsts[i%3]
		src := fmt.Sprintf("spiffe://cluster.local/ns/shop/sa/caller-%d", i%3+1)
		train = append(train, rec(src, d, "GET", fmt.Sprintf("/items/%d", i), fmt.Sprintf("page=%d&sort=asc", i%9), ""))
		train = append(train, rec(src, d, "POST", "/items", "", fmt.Sprintf("qty=%d&note=gift", i%4)))
	}
	for _, r := range train {
		r.Request.Status, r.Request.ResponseBytes = 200, int64(500+len(r.Request.Path))
	}
	replay = append(replay, train[:60]...)
	exfil := *train[61]
	exfil.Request.ResponseBytes = 80_000_000
	replay = append(replay, &exfil)
	replay = append(replay,
		rec("spiffe://cluster.local/ns/shop/sa/intruder", "cart.shop", "GET", "/items/5", "page=1&sort=asc", ""),
		rec("spiffe://cluster.local/ns/shop/sa/caller-1", "orders.shop", "GET", "/admin/export", "", ""),
		rec("spiffe://cluster.local/ns/shop/sa/caller-2", "users.shop", "GET", "/items/5", "page=1'%20or%201=1--&sort=asc", ""),
		rec("spiffe://cluster.local/ns/shop/sa/caller-2", "users.shop", "POST", "/items", "", "qty=1&note=%3Cscript%3Ealert(1)%3C/script%3E"),
		rec("spiffe://cluster.local/ns/shop/sa/caller-3", "unknown.ns", "GET", "/", "", ""),
	)
	return train, replay
}

func TestNativeAndWasmAgree(t *testing.T) {
	train, replay := traffic()
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(1_700_000_000, 0)
	tr, _ := models.NewTrainer(cfg)
	for _, r := range train {
		tr.Observe(&r.Request)
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	forEachProfile(t, func(t *testing.T, profile wazerohost.Profile) { nativeAndWasmAgree(t, m, replay, profile) })
}

func nativeAndWasmAgree(t *testing.T, m *models.Model, replay []*source.Record, profile wazerohost.Profile) {
	native := &Native{Model: m}
	wasm, err := NewWasm(wasmPath, m, 0, profile)
	if err != nil {
		t.Fatal(err)
	}
	defer wasm.Close()
	a, err := native.Run(replay)
	if err != nil {
		t.Fatal(err)
	}
	b, err := wasm.Run(replay)
	if err != nil {
		t.Fatal(err)
	}
	flagged := 0
	for i := range replay {
		// The filter reports scores with three decimals.
		if math.Abs(a[i].Score-b[i].Score) > 0.0005 || a[i].Flagged != b[i].Flagged || a[i].Scored != b[i].Scored {
			t.Errorf("record %d (%s %s %s?%s): native %+v, wasm %+v", i, replay[i].Request.Destination, replay[i].Request.Method, replay[i].Request.Path, replay[i].Request.Query, a[i], b[i])
		}
		if a[i].Flagged {
			flagged++
		}
	}
	// Every one of the six anomalies is flagged, none of the normal ones.
	if flagged != 6 {
		t.Errorf("%d flagged, want the 6 anomalies", flagged)
	}
	if !b[60].Flagged || b[60].Reasons[0] != "response_size" {
		t.Errorf("exfiltration-sized response: %+v", b[60])
	}
	if len(b[len(b)-1].Reasons) == 0 {
		t.Error("no reasons read back from the filter for a flagged request")
	}
}

// forEachProfile runs a test of the compiled filter on every Envoy host
// profile meshward supports: each answers WASI calls as that Envoy's Wasm
// host does.
// Under -short (make unit) only the strictest profile runs, envoy-1.33;
// make test runs them all.
func forEachProfile(t *testing.T, fn func(t *testing.T, p wazerohost.Profile)) {
	t.Helper()
	for _, p := range wazerohost.Profiles {
		if testing.Short() && p != wazerohost.Envoy133 {
			continue
		}
		t.Run(string(p), func(t *testing.T) { fn(t, p) })
	}
}
