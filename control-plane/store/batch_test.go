package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models/record"
)

// keyedBatch is a batch of one destination's records from a few sources,
// scored by a model version (so every kind of write is in it).
func keyedBatch(t0 time.Time, key string) Batch {
	sha := strings.Repeat("cd", 32)
	var recs []record.Record
	for i := 0; i < 40; i++ {
		r := rec(t0, fmt.Sprintf("spiffe://cluster.local/ns/shop/sa/src-%d", i%4), "users.shop", fmt.Sprintf("/users/%d", i), 200, i%10 == 0)
		r.ModelSHA256 = sha
		if !r.Flagged {
			r.SampleRate = 0.5
		}
		recs = append(recs, r)
	}
	return Batch{Key: key, Records: recs, Observe: true}
}

// counted reads back what a keyedBatch writes: the edge count, samples,
// weighted requests of the version, and observation stream entries.
func counted(t *testing.T, s *Store, rdb redis.UniversalClient, t0 time.Time) (edges int64, samples int, requests float64, observed int64) {
	t.Helper()
	ctx := context.Background()
	es, err := s.Edges(ctx, "users.shop", t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		edges += e.Count
	}
	got, err := s.Samples(ctx, "users.shop", 1000)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Verdicts(ctx, t0, t0)
	if err != nil {
		t.Fatal(err)
	}
	observed, err = rdb.XLen(ctx, s.observationsKey()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return edges, len(got), v[VerdictsAll].Requests, observed
}

// A batch sent again with its key (the sender's retry) is reported a
// duplicate and changes nothing: not the counts, not the samples, not the
// verdicts, not the observation stream. A batch with another key counts,
// also after Redis lost the ingest script (SCRIPT FLUSH).
// On a single redis-server, on a Redis Cluster, and on the embedded server.
func TestIngestBatchIsIdempotent(t *testing.T) {
	single := redistest.Start(t)
	cluster := redistest.StartCluster(t)
	mr := miniredis.RunT(t)
	for name, rdb := range map[string]redis.UniversalClient{
		"redis-server": single.Client(t), "cluster": cluster.Client(t), "embedded": redis.NewClient(&redis.Options{Addr: mr.Addr()}),
	} {
		t.Run(name, func(t *testing.T) {
			s, err := New(rdb, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			t0 := time.Now().UTC()
			b := keyedBatch(t0, "sender|batch-1")
			if dup, err := s.IngestBatch(ctx, b); err != nil || dup {
				t.Fatalf("first time: duplicate %v, %v", dup, err)
			}
			e1, s1, r1, o1 := counted(t, s, rdb, t0)
			if e1 != 40 || s1 != 36 || r1 != 4+36*2 || o1 != 1 {
				t.Fatalf("after one batch: edges %d, samples %d, requests %v, observed %d", e1, s1, r1, o1)
			}
			for i := 0; i < 3; i++ {
				if dup, err := s.IngestBatch(ctx, b); err != nil || !dup {
					t.Fatalf("retry %d: duplicate %v, %v", i, dup, err)
				}
			}
			if e, sm, r, o := counted(t, s, rdb, t0); e != e1 || sm != s1 || r != r1 || o != o1 {
				t.Errorf("the retries counted: edges %d, samples %d, requests %v, observed %d", e, sm, r, o)
			}
			// A restarted Redis has forgotten the script: it is sent again.
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			b.Key = "sender|batch-2"
			if dup, err := s.IngestBatch(ctx, b); err != nil || dup {
				t.Fatalf("another batch: duplicate %v, %v", dup, err)
			}
			if e, _, r, o := counted(t, s, rdb, t0); e != 80 || r != 2*r1 || o != 2 {
				t.Errorf("a second batch: edges %d, requests %v, observed %d", e, r, o)
			}
		})
	}
}

// A batch interrupted between Cluster nodes (here: its edge, route and
// sample writes applied, the rest not) is completed by its retry, and what
// was applied is not applied again.
func TestIngestBatchCompletesAnInterruptedBatch(t *testing.T) {
	cluster := redistest.StartCluster(t)
	rdb := cluster.Client(t)
	s, err := New(rdb, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now().UTC()
	b := keyedBatch(t0, "sender|batch-1")
	// Apply the users.shop slot's share alone, as the first attempt did
	// before the connection to the other nodes broke.
	part := b
	part.Observe = false
	part.Records = nil
	for _, r := range b.Records {
		r.ModelSHA256 = "" // no verdict writes in this attempt
		part.Records = append(part.Records, r)
	}
	if _, err := s.IngestBatch(ctx, Batch{Key: b.Key, Records: part.Records}); err != nil {
		t.Fatal(err)
	}
	e0, s0, r0, o0 := counted(t, s, rdb, t0)
	if e0 != 40 || s0 != 36 || r0 != 0 || o0 != 0 {
		t.Fatalf("the interrupted attempt: edges %d, samples %d, requests %v, observed %d", e0, s0, r0, o0)
	}
	if dup, err := s.IngestBatch(ctx, b); err != nil || dup {
		t.Fatalf("the retry: duplicate %v, %v", dup, err)
	}
	if e, sm, r, o := counted(t, s, rdb, t0); e != 40 || sm != 36 || r != 4+36*2 || o != 1 {
		t.Errorf("after the retry: edges %d (want 40), samples %d (36), requests %v (76), observed %d (1)", e, sm, r, o)
	}
}

// A large batch, one source calling 3,000 destinations (members beyond
// what one Lua call unpacks), is stored whole.
func TestIngestBatchOfManyMembers(t *testing.T) {
	s, _ := newStore(t, DefaultConfig())
	ctx := context.Background()
	t0 := time.Now().UTC()
	var recs []record.Record
	for i := 0; i < 20_000; i++ {
		recs = append(recs, rec(t0, "spiffe://cluster.local/ns/shop/sa/scanner", fmt.Sprintf("svc-%d.shop", i%3000), "/x", 200, false))
	}
	if _, err := s.IngestBatch(ctx, Batch{Key: "k", Records: recs}); err != nil {
		t.Fatal(err)
	}
	n, err := s.FanOut(ctx, "spiffe://cluster.local/ns/shop/sa/scanner", t0, t0)
	if err != nil || n < 2900 || n > 3100 {
		t.Errorf("fan-out %d (%v), want about 3000", n, err)
	}
	dsts, err := s.Destinations(ctx)
	if err != nil || len(dsts) != 3000 {
		t.Errorf("%d destinations (%v), want 3000", len(dsts), err)
	}
}
