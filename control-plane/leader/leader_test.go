package leader

import (
	"context"
	"testing"
	"time"

	"github.com/meshward/meshward/internal/redistest"
)

func waitFor(t *testing.T, ch <-chan bool, want bool, within time.Duration) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case got := <-ch:
			if got == want {
				return
			}
		case <-timeout:
			t.Fatalf("leadership did not become %v within %v", want, within)
		}
	}
}

// TestOneLeader runs two replicas on a real Redis: exactly one leads; when
// it stops, the other takes over.
func TestOneLeader(t *testing.T) {
	srv := redistest.Start(t)
	cfg := Config{Key: "mw:leader", TTL: 300 * time.Millisecond}
	a, _ := New(srv.Client(t), Config{Key: cfg.Key, TTL: cfg.TTL, Identity: "a"})
	b, _ := New(srv.Client(t), Config{Key: cfg.Key, TTL: cfg.TTL, Identity: "b"})
	ctxA, stopA := context.WithCancel(context.Background())
	go a.Run(ctxA)
	waitFor(t, a.Changes(), true, 2*time.Second)
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	go b.Run(ctxB)
	// b campaigns at least a few times while a renews: it never leads.
	for i := 0; i < 5; i++ {
		b.step(context.Background())
		if b.Leading() {
			t.Fatal("two leaders")
		}
	}
	stopA() // a releases the lock on the way out
	waitFor(t, b.Changes(), true, 2*time.Second)
	if a.Leading() {
		t.Error("a still thinks it leads after stopping")
	}
}

// TestLeaderLosesLockWhenItLapses: a leader that cannot renew in time (the
// key expired and another took it) steps down.
func TestLeaderLosesLockWhenItLapses(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	a, _ := New(rdb, Config{Key: "mw:leader", TTL: 200 * time.Millisecond, Identity: "a"})
	a.step(context.Background())
	if !a.Leading() {
		t.Fatal("a did not take a free lock")
	}
	rdb.Set(context.Background(), "mw:leader", "someone-else", time.Second)
	a.step(context.Background())
	if a.Leading() {
		t.Error("a kept leading after losing the lock")
	}
}
