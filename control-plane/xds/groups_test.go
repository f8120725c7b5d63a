package xds

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/meshward/meshward/filter/pluginconfig"
)

func startBounded(t *testing.T, ttl time.Duration, max int) *Server {
	t.Helper()
	srv, err := New(Config{WasmURI: "/etc/meshward/meshward.wasm", Base: pluginconfig.Config{Mode: pluginconfig.ModeMonitor}, GroupTTL: ttl, MaxGroups: max})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// visit connects a node of its own group, takes one configuration, and
// goes away.
func visit(t *testing.T, srv *Server, group string) {
	t.Helper()
	c, err := Dial(srv.Addr, Node(group+"-0", group, "fake"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Recv(); err != nil {
		t.Fatalf("%s: %v", group, err)
	}
	c.Close()
}

func heapMB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// TestNodeGroupsAreBounded: 2,000 fake node groups connecting in turn
// leave at most MaxGroups kept (the idlest forgotten, counted); a group
// with an Envoy connected is never forgotten and still gets each new
// model.
func TestNodeGroupsAreBounded(t *testing.T) {
	srv := startBounded(t, time.Hour, 50)
	r1, secs1 := release(t, 1, "reviews.shop")
	if err := srv.Publish(context.Background(), r1, secs1); err != nil {
		t.Fatal(err)
	}
	real, err := Dial(srv.Addr, Node("reviews-1", "reviews", "shop"))
	if err != nil {
		t.Fatal(err)
	}
	defer real.Close()
	u, err := real.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = real.ACK(u)
	before := heapMB()
	for i := 0; i < 2000; i++ {
		visit(t, srv, fmt.Sprintf("fake%d", i))
	}
	after := heapMB()
	// Closing streams is asynchronous on the server: poll until it saw
	// them all go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		kept, evicted := srv.Groups()
		if kept <= 50 && evicted >= 2000+1-50 {
			t.Logf("2,000 fake groups: %d kept, %d forgotten; heap %.1f → %.1f MB", kept, evicted, before, after)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d groups kept, %d forgotten; want at most 50 kept", kept, evicted)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	r2, secs2 := release(t, 2, "reviews.shop")
	if err := srv.Publish(context.Background(), r2, secs2); err != nil {
		t.Fatal(err)
	}
	sha2 := r2.Sections["reviews.shop"]
	if u, err := real.Recv(); err != nil || u.Version != sha2 {
		t.Fatalf("the connected group after the flood: %+v %v, want %.12s", u, err, sha2)
	}
}

// TestNodeGroupsExpireAndCap: a group idle past GroupTTL is forgotten when
// another arrives; with MaxGroups groups all connected, a new one is
// refused.
func TestNodeGroupsExpireAndCap(t *testing.T) {
	srv := startBounded(t, 50*time.Millisecond, 2)
	r1, secs1 := release(t, 1, "reviews.shop")
	if err := srv.Publish(context.Background(), r1, secs1); err != nil {
		t.Fatal(err)
	}
	visit(t, srv, "gone")
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Past the TTL, the next group's arrival forgets the idle one.
		time.Sleep(60 * time.Millisecond) // longer than GroupTTL: the point of the test
		var conns []*Client
		for _, g := range []string{"a", "b"} {
			c, err := Dial(srv.Addr, Node(g+"-1", g, "shop"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Recv(); err != nil {
				t.Fatalf("%s: %v", g, err)
			}
			conns = append(conns, c)
		}
		if kept, evicted := srv.Groups(); kept == 2 && evicted >= 1 {
			break
		}
		if time.Now().After(deadline) {
			kept, evicted := srv.Groups()
			t.Fatalf("%d kept, %d forgotten: the idle group did not expire", kept, evicted)
		}
		for _, c := range conns {
			c.Close()
		}
	}
	c, err := Dial(srv.Addr, Node("c-1", "c", "shop"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if u, err := c.Recv(); err == nil {
		t.Errorf("a third group with two connected and a cap of 2 was served %s", u.Version)
	}
}
