package quarantine

import (
	"context"
	"log/slog"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/internal/kubetest"
)

// startKube starts a real kube-apiserver (with the Istio CRDs) with the
// given namespaces, and returns Istio and core clients on it.
func startKube(t testing.TB, namespaces ...string) (*kubetest.Env, istioclient.Interface) {
	t.Helper()
	env := kubetest.Start(t)
	for _, ns := range namespaces {
		if _, err := env.Clientset.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return env, ic
}

// TestLifecycleKube is the applier's whole life against a real API server
// enforcing the Istio CRDs' schemas: server-side apply, promotion, a
// foreign object, restart, release, expiry, Events.
func TestLifecycleKube(t *testing.T) {
	env, ic := startKube(t, "train", "auth")
	testLifecycle(t, ic, env.Clientset, true)
}

// TestFarExpiryIsNotBelievedKube: a quarantine written with an expiry in
// 2099 (from a time a record claimed, by an older meshward) is rebuilt,
// and expires one TTL after the applier's clock first sees it, not in
// 2099: ten such could otherwise hold the cap for good.
func TestFarExpiryIsNotBelievedKube(t *testing.T) {
	env, ic := startKube(t, "train")
	ctx := context.Background()
	old, err := New(Config{Rules: testRules()}, ic, env.Clientset, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	d := decision("decoy-1", "decoy", "ts-b.train")
	d.Created, d.Expires = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2099, 1, 1, 1, 0, 0, 0, time.UTC)
	if err := old.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Rules: testRules()}, ic, env.Clientset, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Rebuild(ctx); err != nil || a.Active() != 1 {
		t.Fatalf("rebuild: %v, %d", err, a.Active())
	}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if err := a.Tick(ctx, now); err != nil || a.Active() != 1 {
		t.Fatalf("first tick: %v, %d standing", err, a.Active())
	}
	if err := a.Tick(ctx, now.Add(testRules().TTL)); err != nil || a.Active() != 0 || len(owned(t, ic)) != 0 {
		t.Errorf("one TTL later: %v, %d standing, %d policies", err, a.Active(), len(owned(t, ic)))
	}
}
