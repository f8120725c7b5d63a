package exception

import (
	"errors"
	"testing"
	"time"

	"github.com/meshward/meshward/filter/enforcement"
)

func TestNewRefusesWithTheFieldNamed(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	known := func(w string) bool { return w == "reviews.shop" }
	for _, c := range []struct {
		name string
		req  Request
		want error
	}{
		{"unknown workload", Request{Rule: enforcement.Rule{Workload: "ghost.shop", ReasonCode: "new_caller"}, Reason: "r", TTL: "1h"}, enforcement.ErrWorkload},
		{"malformed route", Request{Rule: enforcement.Rule{Workload: "reviews.shop", Route: "no-slash"}, Reason: "r", TTL: "1h"}, enforcement.ErrRoute},
		{"expiry in the past", Request{Rule: enforcement.Rule{Workload: "reviews.shop", ReasonCode: "new_caller", Expires: now.Add(-time.Minute)}, Reason: "r"}, enforcement.ErrExpires},
		{"bad ttl", Request{Rule: enforcement.Rule{Workload: "reviews.shop", ReasonCode: "new_caller"}, Reason: "r", TTL: "soon"}, enforcement.ErrExpires},
		{"no reason", Request{Rule: enforcement.Rule{Workload: "reviews.shop", ReasonCode: "new_caller"}, TTL: "1h"}, ErrReason},
	} {
		_, err := New(c.req, "alice", now, known)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	e, err := New(Request{Rule: enforcement.Rule{Workload: "reviews.shop", Caller: "spiffe://*/sa/web"}, Reason: "release 4.2", TTL: "24h"}, "alice", now, known)
	if err != nil {
		t.Fatal(err)
	}
	if e.ID == "" || e.Author != "alice" || !e.Expires.Equal(now.Add(24*time.Hour)) {
		t.Errorf("built %+v", e)
	}
}

func TestForAndActive(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	mk := func(id, w string, exp time.Duration) Exception {
		return Exception{Rule: enforcement.Rule{ID: id, Workload: w, ReasonCode: "new_caller", Expires: now.Add(exp)}}
	}
	es := []Exception{mk("a", "reviews.shop", time.Hour), mk("b", enforcement.Mesh, time.Hour), mk("c", "ratings.shop", time.Hour), mk("d", "reviews.shop", -time.Second)}
	rules := For(es, "reviews.shop", now)
	if len(rules) != 2 || rules[0].ID != "a" || rules[1].ID != "b" {
		t.Errorf("For(reviews.shop) = %+v, want a and b (its own and the mesh's, not expired)", rules)
	}
	if n := len(Active(es, now)); n != 3 {
		t.Errorf("Active = %d, want 3", n)
	}
	raw := map[string][]byte{"a": []byte(`{"id":"a","workload":"*","reason_code":"new_caller","expires":"2030-01-01T00:00:00Z"}`), "bad": []byte(`{`)}
	list, err := Decode(raw)
	if len(list) != 1 || err == nil {
		t.Errorf("Decode kept %d, err %v: want the good one kept and the bad one reported", len(list), err)
	}
}
