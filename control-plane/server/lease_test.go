package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/control-plane/kube"
	"github.com/meshward/meshward/internal/kubetest"
)

// TestServeElectsWithLease: given a kubeconfig (as `serve -kubeconfig`
// gets it), the control plane elects itself through a Lease in the real
// API server, says so on /api/v1/leader, and releases the Lease on Close.
func TestServeElectsWithLease(t *testing.T) {
	env := kubetest.Start(t)
	target, err := kube.Find(env.Kubeconfig, false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.CollectorAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Kube, cfg.LeaseNamespace = target.Config, env.Namespace(t, "serve")
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = s.Close()
		}
	})
	var got struct {
		Leading  bool
		Election string
	}
	deadline := time.Now().Add(15 * time.Second)
	for !got.Leading {
		if time.Now().After(deadline) {
			t.Fatalf("not leading within 15 s: %+v", got)
		}
		_, body := get(t, s.AdminURL+"/api/v1/leader")
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("/api/v1/leader: %v: %s", err, body)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	if got.Election != "kubernetes-lease" {
		t.Errorf("election %q, want kubernetes-lease", got.Election)
	}
	leases := env.Clientset.CoordinationV1().Leases(cfg.LeaseNamespace)
	l, err := leases.Get(context.Background(), cfg.LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := l.Spec.HolderIdentity; h == nil || !strings.HasSuffix(*h, "/"+s.CollectorURL) {
		t.Errorf("Lease holder %v, want this replica (…/%s)", h, s.CollectorURL)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	l, err = leases.Get(context.Background(), cfg.LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := l.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("Lease still held by %q after Close", *h)
	}
}

// TestServeElectsWithRedisWithoutKube: no API server, so a lock in Redis.
func TestServeElectsWithRedisWithoutKube(t *testing.T) {
	s := start(t, "")
	_, body := get(t, s.AdminURL+"/api/v1/leader")
	if !strings.Contains(body, `"election":"redis-lock"`) {
		t.Errorf("/api/v1/leader: %s", body)
	}
}
