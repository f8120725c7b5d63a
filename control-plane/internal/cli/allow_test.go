package cli

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// TestAllowStatusPreview: meshward allow grants, lists and revokes
// exceptions through a running control plane's admin API (on a real
// redis-server), a bad one is refused with its fields named, status shows
// them, and preview answers; without the token nothing changes.
func TestAllowStatusPreview(t *testing.T) {
	redis := redistest.Start(t)
	tok := hex.EncodeToString([]byte("a test admin token, 32 bytes lo"))
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Redis, cfg.CollectorAddr, cfg.AdminAddr, cfg.XDSAddr = redis.Addr, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Collector.Identity, cfg.Collector.Tokens = collector.ModeToken, map[string]string{"a-sidecar-token-of-32-bytes-long": "spiffe://cluster.local/ns/shop/sa/cart"}
	cfg.Auth.Token = []byte(tok)
	cfg.TrainEvery = 0
	s, err := server.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Store().Ingest(ctx, []record.Record{{TS: time.Now(), Route: "/items/{num}",
		Request: models.Request{Method: "GET", Path: "/items/1", Source: "spiffe://cluster.local/ns/shop/sa/web", Destination: "cart.shop"}}}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := Main(append(args[:1:1], append([]string{"-admin", s.AdminURL, "-token-file", tokFile}, args[1:]...)...), &out, &errOut)
		return out.String() + errOut.String(), err
	}

	out, err := run("allow", "-id", "orders-release", "-workload", "cart.shop", "-caller", "spiffe://cluster.local/ns/shop/sa/orders",
		"-reason", "release 4.2: orders calls cart", "-ttl", "24h")
	if err != nil || !strings.Contains(out, "allowed orders-release") {
		t.Fatalf("allow: %v\n%s", err, out)
	}
	_, err = run("allow", "-workload", "ghost.shop", "-route", "nope", "-reason", "r", "-expires", "2000-01-01T00:00:00Z")
	if err == nil {
		t.Fatal("a bad exception was accepted")
	}
	for _, field := range []string{"workload:", "route:", "expires:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("the refusal does not name %s\n%v", field, err)
		}
	}
	var out2, errOut bytes.Buffer
	if err := Main([]string{"allow", "-admin", s.AdminURL, "-token-file", filepath.Join(dir, "missing"), "-workload", "cart.shop", "-reason-code", "new_caller", "-reason", "r", "-ttl", "1h"}, &out2, &errOut); err == nil {
		t.Error("allow without a readable token succeeded")
	}
	if out, err = run("allow", "-list"); err != nil || !strings.Contains(out, "orders-release") || strings.Count(out, "\n") != 2 {
		t.Errorf("allow -list: %v\n%s", err, out)
	}
	out, err = run("status")
	t.Logf("status:\n%s", out)
	if err != nil || !strings.Contains(out, "exceptions: 1") || !strings.Contains(out, "cart.shop") {
		t.Errorf("status: %v\n%s", err, out)
	}
	if out, err = run("preview", "-since", "1h"); err != nil || !strings.Contains(out, "enforce would deny 0 requests") {
		t.Errorf("preview: %v\n%s", err, out)
	}
	if _, err = run("preview", "-mode", "monitor"); err == nil || !strings.Contains(err.Error(), "-mode") {
		t.Errorf("preview -mode monitor: %v", err)
	}
	if out, err = run("allow", "-revoke", "orders-release"); err != nil || !strings.Contains(out, "revoked orders-release") {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	if _, err = run("allow", "-revoke", "orders-release"); err == nil {
		t.Error("revoking twice succeeded")
	}
}
