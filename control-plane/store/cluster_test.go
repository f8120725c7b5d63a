package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models/record"
)

// TestOnRedisCluster runs the store on a three-node Redis Cluster through
// go-redis' ClusterClient: ingest (edges, fan-out, routes, verdicts per
// version), samples, models, the rollout state and incidents all work —
// a CROSSSLOT error would fail them — and the keys spread over the nodes.
func TestOnRedisCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	rdb := cluster.Client(t)
	s, err := New(rdb, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now()
	sha := strings.Repeat("ab", 32)
	var batch []record.Record
	for i := 0; i < 600; i++ {
		r := rec(t0, fmt.Sprintf("src-%d", i%7), fmt.Sprintf("svc-%d.shop", i%12), fmt.Sprintf("/items/%d", i), 200, i%60 == 0)
		r.ModelSHA256 = sha
		if !r.Flagged {
			r.SampleRate = 0.5
		}
		batch = append(batch, r)
	}
	if err := s.Ingest(ctx, batch); err != nil {
		t.Fatalf("ingest on a cluster: %v", err)
	}
	edges, err := s.Edges(ctx, "svc-3.shop", t0)
	if err != nil || len(edges) == 0 {
		t.Errorf("edges %+v %v", edges, err)
	}
	if n, err := s.FanOut(ctx, "src-1", t0.Add(-time.Minute), t0.Add(time.Minute)); err != nil || n != 12 {
		t.Errorf("fan-out of src-1 = %d (%v), want 12", n, err)
	}
	if got, err := s.Samples(ctx, "svc-5.shop", 1000); err != nil || len(got) != 50 {
		t.Errorf("samples of svc-5.shop: %d (%v), want 50", len(got), err)
	}
	v, err := s.Verdicts(ctx, t0, t0)
	if err != nil || v[VerdictsAll].Flagged != 10 || v[VerdictsAll].Requests != 10+590*2 {
		t.Errorf("verdicts %+v (%v), want 10 flagged of 1190 (sampled at 50%%)", v, err)
	}

	// Releases (sections spread over the slots of their workloads), the
	// rollout state (a WATCH transaction) and incidents.
	var shas []string
	for i := 0; i < 2; i++ {
		got, err := s.PutModel(ctx, encode(t, trained(t, uint64(i+1), 12)))
		if err != nil {
			t.Fatalf("PutModel on a cluster: %v", err)
		}
		shas = append(shas, got)
	}
	r, err := s.Release(ctx, shas[1])
	if err != nil {
		t.Fatal(err)
	}
	if secs, err := s.SectionsOf(ctx, r.Sections); err != nil || len(secs) != 13 {
		t.Fatalf("the sections of a release, read back from a cluster: %d, %v", len(secs), err)
	}
	if err := s.SetCurrent(ctx, shas[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.StartCanary(ctx, shas[1], t0); err != nil {
		t.Fatal(err)
	}
	if err := s.EndCanary(ctx, Decision{SHA256: shas[1], Stable: shas[0], Outcome: Promoted, At: t0}); err != nil {
		t.Fatalf("EndCanary on a cluster: %v", err)
	}
	if cur, _ := s.Current(ctx); cur != shas[1] {
		t.Errorf("current %s after promotion", cur)
	}
	if decs, err := s.Decisions(ctx, 5); err != nil || len(decs) != 1 {
		t.Errorf("decisions %+v %v", decs, err)
	}
	if err := s.PutIncident(ctx, map[string]string{"source": "src-1"}); err != nil {
		t.Fatal(err)
	}
	if incs, err := s.Incidents(ctx, 10); err != nil || len(incs) != 1 {
		t.Errorf("incidents %s %v", incs, err)
	}

	// The keys are spread: every node holds some, and each key of a
	// workload is tagged.
	owners := cluster.SlotOwners(t)
	for i, n := range owners {
		if n == 0 {
			t.Errorf("node %d holds no key (%v): the hash tags do not spread workloads", i, owners)
		}
	}
	err = rdb.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		keys, err := node.Keys(ctx, "*").Result()
		for _, k := range keys {
			if !containsBrace(k) && k != "mw:destinations" && k != "mw:models" && k != "mw:incidents" && !strings.HasPrefix(k, "mw:model:") && !strings.HasPrefix(k, "mw:content:") {
				t.Errorf("key %s is not hash-tagged", k)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// A run's store is cleared on every node; another prefix is untouched.
	if err := rdb.Set(ctx, "other:{x}:k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if owners := cluster.SlotOwners(t); owners[0]+owners[1]+owners[2] != 1 {
		t.Errorf("after Clear: %v keys per node, want only the other prefix's", owners)
	}
}
