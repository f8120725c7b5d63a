package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshward/meshward/models"
)

// The state metrics are on /metrics with the store's and xDS's truth, the
// model in force can be downloaded, and Metrics lists what /metrics serves.
func TestStateMetricsAndModelDownload(t *testing.T) {
	s := start(t, "")
	_, m := get(t, s.AdminURL+"/metrics")
	for _, want := range []string{"meshward_redis_up 1", "meshward_models_stored 0", "meshward_incidents_total 0", "meshward_xds_nacks 0"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := get(t, s.AdminURL+"/api/v1/models/current"); code != 404 {
		t.Errorf("no model yet: %d, want 404", code)
	}
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
	resp.Body.Close()
	if err := s.store.PutIncident(context.Background(), map[string]string{"principal": "x"}); err != nil {
		t.Fatal(err)
	}
	// The section a workload receives (its own, else the fallback).
	code, body := get(t, s.AdminURL+"/api/v1/models/current?workload="+url.QueryEscape("cart.shop"))
	sec, err := models.DecodeSection([]byte(body))
	if code != 200 || err != nil || sec.SectionFor != "cart.shop" {
		t.Fatalf("download: %d, %v", code, err)
	}
	code, body = get(t, s.AdminURL+"/api/v1/models/current?workload=stranger.shop")
	if sec, err := models.DecodeSection([]byte(body)); code != 200 || err != nil || sec.SectionFor != models.GlobalWorkload {
		t.Fatalf("download of the fallback: %d, %v", code, err)
	}
	version, _ := s.store.Current(context.Background())
	_, m = get(t, s.AdminURL+"/metrics")
	for _, want := range []string{`meshward_model_info{sha256="` + version + `"} 1`, "meshward_models_stored 1", "meshward_incidents_total 1", `meshward_trainer_rounds_total{outcome="published"} 1`} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Metrics is what /metrics serves: every family of meshward's there
	// is listed, with the label names its series have, and the runtime's
	// standard ones are served beside them.
	labels := MetricLabels()
	if len(labels) != len(Metrics()) {
		t.Errorf("Metrics lists a name twice: %d names, %d metrics", len(labels), len(Metrics()))
	}
	families, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, f := range families {
		served[f.GetName()] = true
		want, ok := labels[f.GetName()]
		if !ok {
			if strings.HasPrefix(f.GetName(), "meshward_") {
				t.Errorf("/metrics serves %s, which Metrics does not list", f.GetName())
			}
			continue
		}
		for _, m := range f.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName())
			}
			if !slices.Equal(got, slices.Sorted(slices.Values(want))) { // a series' labels come sorted
				t.Errorf("%s: a series with labels %v, Metrics says %v", f.GetName(), got, want)
			}
		}
	}
	for _, n := range []string{MetricRollbacks, MetricCollectorBatch, MetricTrainerRounds, MetricModelInfo, MetricRedisUp, "go_goroutines", "process_cpu_seconds_total"} {
		if !served[n] {
			t.Errorf("/metrics does not serve %s", n)
		}
	}
	if !slices.Equal(labels[MetricTrainerRounds], []string{"outcome"}) || !slices.Equal(labels[MetricModelInfo], []string{"sha256"}) || len(labels[MetricRedisUp]) != 0 {
		t.Errorf("labels: rounds %v, model info %v, redis up %v", labels[MetricTrainerRounds], labels[MetricModelInfo], labels[MetricRedisUp])
	}
}

// With -wasm-file, the admin endpoint serves the module and xDS points
// Envoys at it with its sha256.
func TestServesTheWasmFile(t *testing.T) {
	dir := t.TempDir()
	wasm := filepath.Join(dir, "meshward.wasm")
	content := []byte("\x00asm\x01\x00\x00\x00 not really a filter")
	if err := os.WriteFile(wasm, content, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.CollectorAddr, cfg.AdminAddr, cfg.XDSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.XDS.WasmURI, cfg.WasmFile = "http://meshward.meshward-system.svc:9091/wasm/meshward.wasm", wasm
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	code, body := get(t, s.AdminURL+"/wasm/meshward.wasm")
	if code != 200 || body != string(content) {
		t.Fatalf("GET /wasm/meshward.wasm: %d, %d bytes", code, len(body))
	}
	sum := sha256.Sum256(content)
	if got := s.cfg.XDS.WasmSHA256; got != hex.EncodeToString(sum[:]) {
		t.Fatalf("xDS would pin sha256 %q, want the file's %x", got, sum)
	}
}

// Records are counted by outcome, and every outcome of the collector, the
// trainer and the canary is on /metrics from the start (at 0), so that
// increase() sees the first event.
func TestOutcomesCountedFromZero(t *testing.T) {
	s := start(t, "")
	_, m := get(t, s.AdminURL+"/metrics")
	for _, want := range []string{`meshward_collector_records_total{outcome="accepted"} 0`, `meshward_collector_records_total{outcome="refused"} 0`,
		`meshward_trainer_rounds_total{outcome="failed"} 0`, `meshward_trainer_rounds_total{outcome="published"} 0`, `meshward_trainer_rounds_total{outcome="rejected"} 0`,
		`meshward_canary_decisions_total{outcome="promoted"} 0`, `meshward_canary_decisions_total{outcome="rolled_back"} 0`} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code := shipRaw(t, s, "cart.shop", batch()+batch()+"{not json}\n"); code != 400 {
		t.Fatalf("a batch with a bad line: %d, want 400", code)
	}
	_, m = get(t, s.AdminURL+"/metrics")
	for _, want := range []string{`meshward_collector_records_total{outcome="accepted"} 2`, `meshward_collector_records_total{outcome="refused"} 1`, `meshward_collector_batches_total{code="400"} 1`} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
