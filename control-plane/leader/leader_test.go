package leader

import (
	"context"
	"errors"
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
	if err := a.Check(context.Background()); err != nil {
		t.Fatalf("Check while leading: %v", err)
	}
	rdb.Set(context.Background(), "mw:leader", "someone-else", time.Second)
	// Fenced at once, before a notices on its next renewal.
	if err := a.Check(context.Background()); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Check after the lock was taken: %v", err)
	}
	a.step(context.Background())
	if a.Leading() {
		t.Error("a kept leading after losing the lock")
	}
}

// TestLeaderLocalDeadline: a leader that cannot renew (Redis unreachable)
// stops leading on its own clock within two thirds of the TTL, before the
// lock lapses for the others; a later term of the same replica has a new
// fencing token.
func TestLeaderLocalDeadline(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	a, _ := New(rdb, Config{Key: "mw:leader", TTL: 600 * time.Millisecond, Identity: "a"})
	a.step(context.Background())
	first := a.value
	if !a.Leading() || first == "" {
		t.Fatal("a did not take a free lock")
	}
	start := time.Now()
	for a.Leading() {
		if time.Since(start) > 600*time.Millisecond {
			t.Fatal("still leading past the lock's TTL without renewing")
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	if err := a.Check(context.Background()); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Check past the local deadline: %v", err)
	}
	// The lock lapses; a takes it again with another token.
	for !a.Leading() {
		if time.Since(start) > 5*time.Second {
			t.Fatal("a never took the lapsed lock again")
		}
		time.Sleep(50 * time.Millisecond) // poll interval
		a.step(context.Background())
	}
	if a.value == first {
		t.Errorf("the same fencing token %q for two terms", first)
	}
}
