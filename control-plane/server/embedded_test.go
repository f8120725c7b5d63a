package server

import (
	"context"
	"testing"
	"time"
)

// TestEmbeddedStoreExpires checks that the embedded Redis-protocol server
// expires keys as Redis does: a windowed key is gone once its retention has
// passed. The embedded server's clock is moved, not waited for.
func TestEmbeddedStoreExpires(t *testing.T) {
	s := start(t, "")
	ctx := context.Background()
	if code := ship(t, s, batch()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	now := time.Now()
	edges, err := s.store.Edges(ctx, "cart.shop", now)
	if err != nil || len(edges) != 1 {
		t.Fatalf("edges before expiry: %v, %v; want the shipped one", edges, err)
	}
	s.embedded.SetTime(now.Add(s.cfg.Store.Retention + time.Minute))
	edges, err = s.store.Edges(ctx, "cart.shop", now)
	if err != nil || len(edges) != 0 {
		t.Errorf("edges after the retention (%v) has passed: %v, %v; want none", s.cfg.Store.Retention, edges, err)
	}
}
