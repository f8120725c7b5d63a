package store

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

func newStore(t testing.TB, cfg Config) (*Store, *redistest.Server) {
	srv := redistest.Start(t)
	s, err := New(srv.Client(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, srv
}

func rec(ts time.Time, src, dst, path string, status int, flagged bool) record.Record {
	return record.Record{TS: ts, Route: models.Template(path), Flagged: flagged,
		Request: models.Request{Method: "GET", Path: path, Source: src, Destination: dst, Status: status}}
}

func TestIngestAggregates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxSamples = 100
	s, _ := newStore(t, cfg)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var batch []record.Record
	for i := 0; i < 500; i++ {
		batch = append(batch, rec(t0.Add(time.Duration(i)*10*time.Millisecond), "frontend", "cart.shop", fmt.Sprintf("/items/%d", i), 200, false))
	}
	for i := 0; i < 30; i++ {
		batch = append(batch, rec(t0.Add(time.Second), "intruder", fmt.Sprintf("svc-%d.shop", i), "/admin", 403, true))
	}
	if err := s.Ingest(ctx, batch); err != nil {
		t.Fatal(err)
	}
	edges, err := s.Edges(ctx, "cart.shop", t0)
	if err != nil || len(edges) != 1 || edges[0].Count != 500 || edges[0].Route != "/items/{num}" || edges[0].Source != "frontend" {
		t.Errorf("edges %+v %v", edges, err)
	}
	n, err := s.FanOut(ctx, "intruder", t0, t0.Add(time.Minute))
	if err != nil || n < 29 || n > 31 {
		t.Errorf("fan-out of intruder = %d (%v), want about 30", n, err)
	}
	samples, err := s.Samples(ctx, "cart.shop", 1000)
	if err != nil || len(samples) < 100 || len(samples) > 200 || samples[len(samples)-1].Path != "/items/499" {
		t.Errorf("samples: %d (%v), want the capped most recent ~100 ending with /items/499", len(samples), err)
	}
	if s, _ := s.Samples(ctx, "svc-1.shop", 10); len(s) != 0 {
		t.Errorf("flagged requests were kept as training samples: %d", len(s))
	}
	if d, _ := s.Destinations(ctx); len(d) != 31 {
		t.Errorf("%d destinations, want 31", len(d))
	}
	// Every key but the model store has a TTL; every per-workload key a tag.
	keys, _ := s.rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		if ttl := s.rdb.TTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %s has no TTL (%v)", k, ttl)
		}
		if !containsBrace(k) && k != "mw:destinations" {
			t.Errorf("key %s is not hash-tagged", k)
		}
	}
}

func containsBrace(k string) bool {
	for i := 0; i < len(k); i++ {
		if k[i] == '{' {
			return true
		}
	}
	return false
}

func TestIncidentsAreCapped(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxIncidents = 5
	s, _ := newStore(t, cfg)
	ctx := context.Background()
	for i := 0; i < 12; i++ {
		if err := s.PutIncident(ctx, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := s.Incidents(ctx, 100)
	if len(got) != 5 || string(got[0]) != `{"n":11}` {
		t.Errorf("incidents %s", got)
	}
}

func TestRedisGoneAndBack(t *testing.T) {
	s, srv := newStore(t, DefaultConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Stop()
	if err := s.Ingest(ctx, []record.Record{rec(time.Now(), "a", "b", "/", 200, false)}); err == nil {
		t.Fatal("ingest into a stopped Redis reported success")
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Prefix, cfg.Window, cfg.MaxSamples = "a{b", 0, 0
	if _, err := New(nil, cfg); err == nil {
		t.Error("bad config accepted")
	}
}

// BenchmarkIngest reports the ingest rate into a real redis-server
// (records/s), in batches of 1,000 as the collector writes them, and beside
// it, for scale, what redis-benchmark gets from the same server (pipelined
// SETs per second).
func BenchmarkIngest(b *testing.B) {
	s, srv := newStore(b, DefaultConfig())
	ctx := context.Background()
	t0 := time.Now()
	batch := make([]record.Record, 1000)
	for i := range batch {
		batch[i] = rec(t0, fmt.Sprintf("src-%d", i%50), fmt.Sprintf("dst-%d.shop", i%20), fmt.Sprintf("/api/v1/items/%d", i), 200, i%100 == 0)
		// As a monitoring filter ships them: the model's version, and the
		// share unflagged records are sampled at.
		batch[i].ModelSHA256 = strings.Repeat("5e", 32)
		if !batch[i].Flagged {
			batch[i].SampleRate = 0.05
		}
	}
	b.ResetTimer()
	start := time.Now()
	n := 0
	for b.Loop() {
		// As the collector stores a batch: once, under its sender's key.
		if _, err := s.IngestBatch(ctx, Batch{Key: fmt.Sprintf("bench|%d", n), Records: batch}); err != nil {
			b.Fatal(err)
		}
		n += len(batch)
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "records/s")
	b.StopTimer()
	host, port, _ := net.SplitHostPort(srv.Addr)
	out, err := exec.Command("redis-benchmark", "-h", host, "-p", port, "-q", "-t", "set", "-n", "200000", "-P", "16").CombinedOutput()
	if err != nil {
		b.Logf("redis-benchmark: %v", err)
		return
	}
	// "SET: 512820.50 requests per second, p50=..."
	for _, line := range strings.Split(string(out), "\r") {
		if i := strings.Index(line, "SET: "); i >= 0 {
			if f := strings.Fields(line[i+5:]); len(f) > 0 {
				if v, err := strconv.ParseFloat(f[0], 64); err == nil {
					b.ReportMetric(v, "redis-benchmark-SET/s")
				}
			}
		}
	}
}

// TestObservationStream: batches published by any replica are read back in
// order after an id; a batch that does not decode is reported and skipped,
// the others are kept.
func TestObservationStream(t *testing.T) {
	s, srv := newStore(t, DefaultConfig())
	ctx := context.Background()
	t0 := time.Now().UTC()
	if err := s.PublishBatch(ctx, []record.Record{rec(t0, "a", "b.shop", "/x", 200, false), rec(t0, "a", "c.shop", "/y", 403, true)}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Client(t).XAdd(ctx, &redis.XAddArgs{Stream: s.observationsKey(), Values: map[string]any{"b": "not json"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.PublishBatch(ctx, []record.Record{rec(t0, "d", "e.shop", "/z", 200, false)}); err != nil {
		t.Fatal(err)
	}
	recs, next, err := s.ReadBatches(ctx, "0-0", -1) // -1: no BLOCK
	if err == nil || !strings.Contains(err.Error(), "observation batch") {
		t.Errorf("the bad batch was not reported: %v", err)
	}
	if len(recs) != 3 || recs[1].Request.Status != 403 || recs[2].Request.Source != "d" {
		t.Fatalf("read %+v", recs)
	}
	recs, again, err := s.ReadBatches(ctx, next, 10*time.Millisecond)
	if err != nil || len(recs) != 0 || again != next {
		t.Errorf("nothing new: %d records, %q → %q, %v", len(recs), next, again, err)
	}
}

// A release is remembered per principal, the latest wins, and a release
// older than a day is dropped when the next one is written.
func TestReleasesRemembered(t *testing.T) {
	s, _ := newStore(t, DefaultConfig())
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli())
	if err := s.NoteRelease(ctx, "old", now.Add(-25*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.NoteRelease(ctx, "web", now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.NoteRelease(ctx, "web", now); err != nil {
		t.Fatal(err)
	}
	got, err := s.Releases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got["web"].Equal(now) {
		t.Fatalf("releases = %v, want web at %v only", got, now)
	}
}
