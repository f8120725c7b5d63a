// Package e2e holds end-to-end tests of meshward's parts as users run them.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

// TestEnvoyEnforces loads build/meshward.wasm into a real Envoy in enforce
// mode and checks that a known edge passes and a new route is denied. It
// needs an envoy binary on PATH (≥ 1.33: Go's wasip1 runtime imports WASI
// functions older hosts refuse) and is skipped, saying so, without one.
func TestEnvoyEnforces(t *testing.T) {
	envoy, err := exec.LookPath("envoy")
	if err != nil {
		t.Skip("SKIPPED: no envoy binary on PATH; the filter is tested as .wasm under the SDK's host emulator instead (make test)")
	}
	wasm := os.Getenv("MESHWARD_WASM")
	if wasm == "" {
		t.Fatal("MESHWARD_WASM is not set (run make e2e)")
	}

	tr, err := models.NewTrainer(models.DefaultTrainConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/ok/%d", i), Source: "127.0.0.1", Destination: "e2e.test"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := models.EncodeSection(m, "e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := (&pluginconfig.Config{Mode: pluginconfig.ModeEnforce, Workload: "e2e.test"}).WithModel(enc).Encode()
	if err != nil {
		t.Fatal(err)
	}

	listen, admin := freePort(t), freePort(t)
	dir := t.TempDir()
	bootstrap := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(bootstrap, []byte(fmt.Sprintf(bootstrapTmpl, admin, listen, quoteYAML(string(cfg)), wasm)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var logs bytes.Buffer
	cmd := exec.CommandContext(ctx, envoy, "-c", bootstrap, "--base-id", fmt.Sprint(listen), "-l", "info")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("envoy output:\n%s", logs.String())
		}
	}()
	waitReady(t, ctx, fmt.Sprintf("http://127.0.0.1:%d/ready", admin))

	base := fmt.Sprintf("http://127.0.0.1:%d", listen)
	if code, _ := get(t, base+"/ok/77"); code != 200 {
		t.Errorf("known edge: status %d, want 200", code)
	}
	if code, body := get(t, base+"/admin/secrets"); code != 403 || !strings.Contains(body, "meshward") {
		t.Errorf("new route: status %d body %q, want 403 from meshward", code, body)
	}
}

const bootstrapTmpl = `
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %d}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "ok"}}
          http_filters:
          - name: meshward
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: meshward
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: %s
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {local: {filename: %q}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`

func quoteYAML(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitReady polls Envoy's admin /ready until it answers 200.
func waitReady(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("envoy did not become ready")
		case <-tick.C:
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
