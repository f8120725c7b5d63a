package server

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// TestEmbeddedStoreExpires checks that the embedded Redis-protocol server
// expires keys as Redis does: a windowed key is gone once its retention has
// passed on the server's clock (a fake one here, moved rather than waited
// for).
func TestEmbeddedStoreExpires(t *testing.T) {
	cfg := testConfig()
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var offset atomic.Int64 // how far the fake clock is ahead of the real one
	s.clock = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	s.expireEvery = 10 * time.Millisecond
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	ctx := context.Background()
	if code := ship(t, s, batch()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	now := time.Now()
	edges, err := s.store.Edges(ctx, "cart.shop", now)
	if err != nil || len(edges) != 1 {
		t.Fatalf("edges before expiry: %v, %v; want the shipped one", edges, err)
	}
	offset.Store(int64(cfg.Store.Retention + time.Minute))
	for deadline := time.Now().Add(10 * time.Second); ; {
		edges, err = s.store.Edges(ctx, "cart.shop", now)
		if err == nil && len(edges) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edges after the retention (%v) has passed: %v, %v; want none", cfg.Store.Retention, edges, err)
		}
		time.Sleep(10 * time.Millisecond) // polling the condition, with a deadline
	}
}
