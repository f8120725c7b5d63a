package leader

import (
	"context"
	"errors"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/meshward/meshward/internal/kubetest"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

// testLease is a Lease election with short timings: a 4 s lease, 2 s renew
// deadline (slack for a loaded machine), 100 ms retry.
func testLease(t *testing.T, cs kubernetes.Interface, ns, identity string) *LeaseElector {
	t.Helper()
	e, err := NewLease(cs, LeaseConfig{Namespace: ns, Name: "meshward-leader", Identity: identity,
		LeaseDuration: 4 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func holder(t *testing.T, cs kubernetes.Interface, ns string) string {
	t.Helper()
	l, err := cs.CoordinationV1().Leases(ns).Get(context.Background(), "meshward-leader", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// TestLeaseOneLeader runs two replicas against a real kube-apiserver: exactly
// one leads and holds the Lease; when it stops it releases the Lease and the
// other takes over well before the lease would have lapsed.
func TestLeaseOneLeader(t *testing.T) {
	env := kubetest.Shared(t)
	ns := env.Namespace(t, "lease")
	a := testLease(t, env.Clientset, ns, "a")
	b := testLease(t, env.Clientset, ns, "b")
	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan struct{})
	go func() { a.Run(ctxA); close(doneA) }()
	waitFor(t, a.Changes(), true, 10*time.Second)
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	go b.Run(ctxB)
	// b retries every 100 ms; over more than a lease duration it never
	// leads while a renews, and the Lease names a throughout.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b.Leading() {
			t.Fatal("two leaders")
		}
		if !a.Leading() {
			t.Fatal("a lost the Lease while renewing it")
		}
		if h := holder(t, env.Clientset, ns); h != "a" {
			t.Fatalf("Lease holder %q, want a", h)
		}
		time.Sleep(200 * time.Millisecond) // pacing between observations, not synchronisation
	}
	stopA()
	<-doneA // Run returns once the Lease is released
	if a.Leading() {
		t.Error("a still thinks it leads after stopping")
	}
	start := time.Now()
	// Released, so b takes it within a few retries, not after the 4 s
	// lease would have lapsed.
	waitFor(t, b.Changes(), true, 2500*time.Millisecond)
	t.Logf("handover after release took %v", time.Since(start))
	if h := holder(t, env.Clientset, ns); h != "b" {
		t.Errorf("Lease holder %q after handover, want b", h)
	}
}

// TestLeaseLostWhenTaken: a leader whose Lease is taken by another holder
// (written straight to the API server) steps down within its renew
// deadline (2 s), and does not overwrite the other's valid Lease.
func TestLeaseLostWhenTaken(t *testing.T) {
	env := kubetest.Shared(t)
	ns := env.Namespace(t, "lease")
	a := testLease(t, env.Clientset, ns, "a")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go a.Run(ctx)
	waitFor(t, a.Changes(), true, 10*time.Second)

	leases := env.Clientset.CoordinationV1().Leases(ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := leases.Get(context.Background(), "meshward-leader", metav1.GetOptions{})
		if err != nil {
			return err
		}
		intruder, secs := "intruder", int32(3600)
		now := metav1.NewMicroTime(time.Now())
		l.Spec = coordinationv1.LeaseSpec{HolderIdentity: &intruder, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now}
		_, err = leases.Update(context.Background(), l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("taking the Lease: %v", err)
	}
	// Before a even notices, its writes are fenced: the Lease names
	// another holder.
	if err := a.Check(context.Background()); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Check with the Lease taken: %v, want ErrNotLeader", err)
	}
	waitFor(t, a.Changes(), false, 5*time.Second)
	if h := holder(t, env.Clientset, ns); h != "intruder" {
		t.Errorf("a overwrote a valid Lease held by %q", h)
	}
}

// TestLeaseLocalDeadline: a leader that cannot reach the API server any
// more (the connection hangs) stops leading on its own clock within its
// renew deadline, before the Lease could pass to another replica.
func TestLeaseLocalDeadline(t *testing.T) {
	env := kubetest.Shared(t)
	ns := env.Namespace(t, "lease")
	// A client whose requests go through a gate: closed, they hang.
	var gate atomic.Bool
	gate.Store(true)
	cfg := rest.CopyConfig(env.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if !gate.Load() {
				<-r.Context().Done()
				return nil, r.Context().Err()
			}
			return rt.RoundTrip(r)
		})
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := testLease(t, cs, ns, "a")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go a.Run(ctx)
	waitFor(t, a.Changes(), true, 10*time.Second)
	if err := a.Check(context.Background()); err != nil {
		t.Fatalf("Check while leading: %v", err)
	}
	gate.Store(false)
	cut := time.Now()
	for a.Leading() {
		if time.Since(cut) > 4*time.Second {
			t.Fatal("still leading past the Lease duration with the API server unreachable")
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	t.Logf("stopped leading %v after the API server became unreachable (renew deadline 2 s, Lease 4 s)", time.Since(cut))
	if err := a.Check(context.Background()); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Check after the deadline: %v", err)
	}
	gate.Store(true)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestLeaseConfigValidate(t *testing.T) {
	good := DefaultLeaseConfig("ns", "name", "me")
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]LeaseConfig{
		"no namespace":        {Name: "n", Identity: "i", LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second},
		"sub-second lease":    {Namespace: "ns", Name: "n", Identity: "i", LeaseDuration: 500 * time.Millisecond, RenewDeadline: 100 * time.Millisecond, RetryPeriod: 10 * time.Millisecond},
		"deadline over lease": {Namespace: "ns", Name: "n", Identity: "i", LeaseDuration: 2 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: time.Second},
		"retry over deadline": {Namespace: "ns", Name: "n", Identity: "i", LeaseDuration: 10 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 2 * time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
