package enforce_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"

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

// TestSinksAreFenced: with a fence that says this replica does not lead,
// the YAML and RBAC sinks write nothing, and say why; with it lifted they
// write. A Dir rebuilt after another replica wrote holds what it wrote.
func TestSinksAreFenced(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	notLeader := errors.New("this replica does not lead")
	var fenced atomic.Bool
	fenced.Store(true)
	fence := func(context.Context) error {
		if fenced.Load() {
			return notLeader
		}
		return nil
	}
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	d := decide.Decision{ID: "ts-a-1", Principal: "spiffe://cluster.local/ns/train/sa/ts-a", Mode: decide.DryRun, Created: t0, Expires: t0.Add(time.Hour),
		Deny: []decide.Target{{Workload: "ts-b.train", Name: "ts-b", Namespace: "train"}}}
	d.TrustDomain, d.Namespace, d.ServiceAccount = decide.ParseSPIFFE(d.Principal)

	dir := t.TempDir()
	ds, err := enforce.NewDir(dir, rules(), log)
	if err != nil {
		t.Fatal(err)
	}
	ds.SetFence(fence)
	p := &published{got: map[string]*rbacfilterv3.RBAC{}}
	rs := enforce.NewRBAC(p, rules(), log)
	rs.SetFence(fence)
	for name, s := range map[string]enforce.Sink{"dir": ds, "rbac": rs} {
		if err := s.Apply(ctx, d); !errors.Is(err, notLeader) || s.Active() != 0 {
			t.Errorf("%s: a fenced apply: %v, %d standing", name, err, s.Active())
		}
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 0 || p.mode("ts-b.train") != "" {
		t.Fatalf("fenced sinks wrote: files %v, rbac %q", files, p.mode("ts-b.train"))
	}
	fenced.Store(false)
	for name, s := range map[string]enforce.Sink{"dir": ds, "rbac": rs} {
		if err := s.Apply(ctx, d); err != nil || s.Active() != 1 {
			t.Errorf("%s: apply: %v, %d standing", name, err, s.Active())
		}
	}
	// Fenced again (another replica leads), nothing expires here.
	fenced.Store(true)
	for name, s := range map[string]enforce.Sink{"dir": ds, "rbac": rs} {
		if err := s.Tick(ctx, t0.Add(2*time.Hour)); !errors.Is(err, notLeader) || s.Active() != 1 {
			t.Errorf("%s: a fenced expiry: %v, %d standing", name, err, s.Active())
		}
	}
	// Another replica's Dir on the same files, rebuilt after the last
	// leader removed one, holds what the files hold.
	again, err := enforce.NewDir(dir, rules(), log)
	if err != nil || again.Active() != 1 {
		t.Fatalf("another replica: %v, %d standing", err, again.Active())
	}
	if err := os.Remove(filepath.Join(dir, "ts-a-1.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := again.Rebuild(ctx); err != nil || again.Active() != 0 {
		t.Errorf("rebuilt after the file went: %v, %d standing", err, again.Active())
	}
}
