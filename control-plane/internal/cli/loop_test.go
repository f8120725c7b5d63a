package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/filter/wasmbuild"
	"github.com/meshward/meshward/internal/redistest"
)

var (
	wasmOnce  sync.Once
	wasmBuilt string
	wasmErr   error
)

// testWasm is the compiled filter: $MESHWARD_WASM (make test sets it), else
// a fresh build, made once.
func testWasm(t *testing.T) string {
	if p := os.Getenv("MESHWARD_WASM"); p != "" {
		return p
	}
	wasmOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meshward-cli-wasm")
		if err != nil {
			wasmErr = err
			return
		}
		wasmBuilt = filepath.Join(dir, "meshward.wasm")
		wasmErr = wasmbuild.Build(wasmBuilt, "../../../filter", wasmbuild.Options{})
	})
	if wasmErr != nil {
		t.Fatalf("building the filter: %v", wasmErr)
	}
	return wasmBuilt
}

// TestRunThroughTheControlPlane is make run's loop on generated traffic:
// the learning part goes through the compiled filter in learn mode to the
// collector, the trainer learns from Redis, the model reaches every
// workload's sidecar over ADS, and the rest is monitored through the filter
// so configured. It runs on the embedded Redis-protocol server and on a
// real redis-server: one code path.
func TestRunThroughTheControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("make run's whole loop, three times over (about 20 s): skipped under -short (make unit); make test runs it")
	}
	wasm := testWasm(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "sample.jsonl")
	if err := Main([]string{"gen", "-out", data, "-requests", "6000"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	// The real redis-server serves two runs: the second starts from a
	// clean slate (its model is trained on its own records only).
	real := redistest.Start(t).Addr
	var learned []int
	for _, redis := range []string{"", real, real} {
		name := "embedded"
		if redis != "" {
			name = "redis-server"
		}
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "run")
			var stdout, stderr bytes.Buffer
			args := []string{"run", "--traffic", data, "--learn-until", "80%", "--runner", "wasm", "--wasm", wasm, "--out", out}
			if redis != "" {
				args = append(args, "--redis", redis)
			}
			if err := Main(args, &stdout, &stderr); err != nil {
				t.Fatalf("run: %v\n%s", err, stderr.String())
			}
			var rep struct {
				Model      string `json:"model_sha256"`
				Requests   int    `json:"requests"`
				Flagged    int    `json:"flagged"`
				Evaluation struct {
					AtThreshold struct{ TP, FP, FN, TN int }
				} `json:"evaluation"`
				Incidents []struct {
					Principal string            `json:"principal"`
					Evidence  []json.RawMessage `json:"evidence"`
				} `json:"incidents"`
				ControlPlane struct {
					Batches  map[string]int `json:"batches_by_status"`
					Dropped  int            `json:"records_dropped"`
					Training struct {
						Published bool `json:"published"`
						Learned   int  `json:"learned"`
					} `json:"training"`
					Model    string `json:"model_sha256"`
					Sidecars int    `json:"sidecars"`
					Verdicts struct {
						Flagged int `json:"flagged"`
					} `json:"verdicts_collected"`
					Incidents int `json:"incidents_stored"`
				} `json:"control_plane"`
			}
			if err := json.Unmarshal(must(os.ReadFile(filepath.Join(out, "report.json"))), &rep); err != nil {
				t.Fatal(err)
			}
			cp := rep.ControlPlane
			if !cp.Training.Published || cp.Model == "" || cp.Model != rep.Model {
				t.Errorf("the model scored with (%s) is not the one trained and rolled out (%s, published %v)", rep.Model, cp.Model, cp.Training.Published)
			}
			learned = append(learned, cp.Training.Learned)
			if cp.Sidecars < 5 || cp.Batches["200"] == 0 || len(cp.Batches) != 1 || cp.Dropped != 0 {
				t.Errorf("control plane %+v", cp)
			}
			// Every flagged request is shipped: the collector counted each.
			if cp.Verdicts.Flagged != rep.Flagged || rep.Flagged == 0 {
				t.Errorf("the collector counted %d flagged requests, the replay %d", cp.Verdicts.Flagged, rep.Flagged)
			}
			ev := rep.Evaluation.AtThreshold
			if ev.TP == 0 || float64(ev.FP) > 0.01*float64(ev.FP+ev.TN) || ev.FN > ev.TP/5 {
				t.Errorf("a model trained through the collector detects poorly: %+v", ev)
			}
			if len(rep.Incidents) == 0 || cp.Incidents < len(rep.Incidents) || rep.Incidents[0].Principal == "" || len(rep.Incidents[0].Evidence) == 0 {
				t.Errorf("incidents: %d in the report, %d stored", len(rep.Incidents), cp.Incidents)
			}
			if s := stdout.String(); !strings.Contains(s, "rolled out over xDS to") || !strings.Contains(s, "incidents: ") {
				t.Errorf("summary:\n%s", s)
			}
		})
	}
	if len(learned) != 3 || learned[0] == 0 || learned[1] != learned[0] || learned[2] != learned[0] {
		t.Errorf("samples learned per run %v: every run learns the same traffic, no more", learned)
	}
}

// TestRunWithoutSourcesSaysSo: traffic whose requests name no caller
// (a capture of one application, say) teaches the control plane nothing;
// run says why and what to give, and with -src it trains.
func TestRunWithoutSourcesSaysSo(t *testing.T) {
	if testing.Short() {
		t.Skip("two runs through the control plane: skipped under -short (make unit); make test runs it")
	}
	wasm := testWasm(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "app.jsonl")
	var b strings.Builder
	for i := 0; i < 600; i++ {
		fmt.Fprintf(&b, `{"dst":"web","method":"GET","path":"/items","query":"page=%d","status":200,"label":"normal"}`+"\n", i%40)
	}
	if err := os.WriteFile(data, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--traffic", data, "--learn-until", "80%", "--runner", "wasm", "--wasm", wasm}
	err := Main(append(args, "--out", filepath.Join(dir, "a")), &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "480 of the 480 learning requests have no source") || !strings.Contains(err.Error(), "-src") {
		t.Fatalf("run without sources: %v", err)
	}
	if err := Main(append(args, "-src", "spiffe://cluster.local/ns/web/sa/ingress", "--out", filepath.Join(dir, "b")), &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatalf("run with -src: %v", err)
	}
}

// TestStatus reads a running control plane's admin API with the token
// given; without credentials, or with a wrong token, it says what to give.
func TestStatus(t *testing.T) {
	const adminToken = "status-test-admin-token-0123456789abcdef"
	cfg := server.DefaultConfig()
	cfg.CollectorAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Collector.Identity, cfg.Collector.Tokens = collector.ModeXFCC, nil
	cfg.Auth.Token = []byte(adminToken)
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dir := t.TempDir()
	good, wrong := filepath.Join(dir, "token"), filepath.Join(dir, "wrong")
	if err := os.WriteFile(good, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrong, []byte(strings.Repeat("x", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", filepath.Join(dir, "no-kubeconfig"))
	if err := Main([]string{"status", "-admin", s.AdminURL}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("status without credentials: %v", err)
	}
	if err := Main([]string{"status", "-admin", s.AdminURL, "--token-file", wrong}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("status with a wrong token: %v", err)
	}
	var out bytes.Buffer
	if err := Main([]string{"status", "-admin", s.AdminURL, "--token-file", good}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ready", "models: 0", "incidents: 0", "model in force: \n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}
