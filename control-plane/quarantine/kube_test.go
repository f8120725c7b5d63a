package quarantine

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/internal/kubetest"
)

// The package's tests share one kube-apiserver (starting one costs about
// 6 s of a busy machine's two cores); startKube keeps them apart.
func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

// startKube returns Istio and core clients on the package's real
// kube-apiserver (with the Istio CRDs) with the given namespaces: made
// unless an earlier test made them (without a namespace controller a
// namespace is never deleted), emptied of AuthorizationPolicies and Events
// when the test ends, so the next test finds only its own.
func startKube(t testing.TB, namespaces ...string) (*kubetest.Env, istioclient.Interface) {
	t.Helper()
	env := kubetest.Shared(t)
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	env.EnsureNamespaces(t, namespaces...)
	for _, ns := range namespaces {
		t.Cleanup(func() {
			if err := ic.SecurityV1().AuthorizationPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
				t.Errorf("emptying %s of policies: %v", ns, err)
			}
			if err := env.Clientset.CoreV1().Events(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
				t.Errorf("emptying %s of Events: %v", ns, err)
			}
		})
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
