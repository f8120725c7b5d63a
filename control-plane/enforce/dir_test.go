package enforce_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/enforce"
)

func TestDirSink(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	s, err := enforce.NewDir(dir, rules(), log)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	d := decide.Decision{ID: "ts-a-1", Principal: "spiffe://cluster.local/ns/train/sa/ts-a", Mode: decide.DryRun, Created: t0, Expires: t0.Add(time.Hour),
		Deny: []decide.Target{{Workload: "ts-b.train", Name: "ts-b", Namespace: "train"}}}
	d.TrustDomain, d.Namespace, d.ServiceAccount = decide.ParseSPIFFE(d.Principal)
	if err := s.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "ts-a-1.yaml")
	b, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(b), `istio.io/dry-run: "true"`) {
		t.Fatalf("%s: %v\n%s", file, err, b)
	}
	// A second incident about the same principal joins the file.
	d2 := d
	d2.ID, d2.Deny = "ts-a-2", []decide.Target{{Workload: "ts-c.train", Name: "ts-c", Namespace: "train"}}
	if err := s.Apply(ctx, d2); err != nil {
		t.Fatal(err)
	}
	if err := s.Tick(ctx, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(file)
	if strings.Contains(string(b), "dry-run") || strings.Count(string(b), "kind: AuthorizationPolicy") != 2 {
		t.Fatalf("after promotion:\n%s", b)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 1 {
		t.Errorf("files %v, want one", files)
	}
	// A restart reads the directory back.
	r, err := enforce.NewDir(dir, rules(), log)
	if err != nil || r.Active() != 1 || !r.Holds("ts-a-1") {
		t.Fatalf("restart: %v, %d active", err, r.Active())
	}
	ds, _ := enforce.ReadDir(dir)
	if len(ds) != 1 || len(ds[0].Deny) != 2 || ds[0].Mode != decide.Enforce {
		t.Fatalf("read back %+v", ds)
	}
	if err := r.Release(ctx, "ts-a-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) || r.Active() != 0 {
		t.Fatalf("after release: %v", err)
	}
	if err := r.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := r.Tick(ctx, d.Expires); err != nil || r.Active() != 0 {
		t.Fatalf("expiry: %v, %d active", err, r.Active())
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatal("the expired file stayed")
	}
}
