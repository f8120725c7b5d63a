package models

import (
	"bytes"
	"encoding/base64"
	"sort"
	"testing"
	"time"
)

// TestFinishGivesTheSameModel: a trainer fed one workload at a time, each
// finished before the next, builds the same bytes as one fed the same
// requests interleaved — workloads train independently.
func TestFinishGivesTheSameModel(t *testing.T) {
	want, err := Encode(trainFixture(t, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	reqs := fixtureRequests()
	sort.SliceStable(reqs, func(a, b int) bool { return reqs[a].Destination < reqs[b].Destination })
	cfg := DefaultTrainConfig()
	cfg.Now = time.Unix(1_700_000_000, 0)
	tr, _ := NewTrainer(cfg)
	for i := range reqs {
		if i > 0 && reqs[i].Destination != reqs[i-1].Destination {
			tr.Finish(reqs[i-1].Destination)
		}
		tr.Observe(&reqs[i])
	}
	// A request to a finished workload is not learned.
	late := reqs[0]
	if tr.Observe(&late) {
		t.Error("a request to a finished workload was learned")
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := Encode(m)
	if !bytes.Equal(got, want) {
		t.Error("training one workload at a time gave another model than training them interleaved")
	}
}

// TestUseCurrent: the model in force can change between workloads; what it
// flags is not learned.
func TestUseCurrent(t *testing.T) {
	m := trainFixture(t, 1, nil)
	cfg := DefaultTrainConfig()
	tr, _ := NewTrainer(cfg)
	intruder := Request{Method: "GET", Path: "/admin/keys", Source: "spiffe://cluster.local/ns/shop/sa/intruder", Destination: "svc-0.shop"}
	if !tr.Observe(&intruder) {
		// Held back, maybe: another path.
		intruder.Path = "/admin/keys2"
		tr.Observe(&intruder)
	}
	_, _, flagged, _ := tr.Samples()
	if flagged != 0 {
		t.Fatalf("flagged %d without a model in force", flagged)
	}
	tr.UseCurrent(m)
	intruder.Path = "/admin/keys3"
	if tr.Observe(&intruder) {
		t.Error("a request the model in force flags was learned")
	}
	if _, _, flagged, _ := tr.Samples(); flagged != 1 {
		t.Errorf("flagged %d, want 1", flagged)
	}
}

// TestSectionsAtScale: in a mesh of 1,000 services every section — the
// fallback included, its global part pruned to its budget — fits a sidecar
// configuration of 64 KiB (base64), and the largest is no larger than in
// a mesh of 50 services by more than the fallback's budget allows.
func TestSectionsAtScale(t *testing.T) {
	largest := map[int]int{}
	globals := map[int]int{}
	for _, n := range []int{50, 1000} {
		f := newMeshFixture(n, 7)
		cfg := DefaultTrainConfig()
		cfg.Now = time.Unix(1_700_000_000, 0)
		tr, _ := NewTrainer(cfg)
		for i := 0; i < 200*n; i++ {
			r := f.request()
			tr.Observe(&r)
		}
		s, err := tr.Sections()
		if err != nil {
			t.Fatal(err)
		}
		globals[n] = len(s.records[GlobalWorkload])
		if g := len(s.records[GlobalWorkload]); g > cfg.MaxGlobalBytes {
			t.Errorf("%d services: the global part is %d bytes, budget %d", n, g, cfg.MaxGlobalBytes)
		}
		names := s.Names()
		if len(names) != n+1 {
			t.Fatalf("%d services: %d sections", n, len(names))
		}
		for _, name := range names {
			b, err := s.Encode(name)
			if err != nil {
				t.Fatal(err)
			}
			if c := base64.StdEncoding.EncodedLen(len(b)); c > 64<<10-512 {
				t.Errorf("%d services: the section of %s is %d bytes, %d in base64: over a 64 KiB configuration", n, name, len(b), c)
			}
			largest[n] = max(largest[n], len(b))
		}
	}
	t.Logf("largest section: %d bytes at 50 services, %d at 1,000; global part %d and %d", largest[50], largest[1000], globals[50], globals[1000])
	// What the fallback may grow by: up to its budget, from what it was.
	if largest[1000] > largest[50]+DefaultTrainConfig().MaxGlobalBytes-globals[50] {
		t.Errorf("the largest section grew from %d bytes (50 services) to %d (1,000)", largest[50], largest[1000])
	}
}

// TestGlobalPartKeepsTheMostFrequent: pruned to its budget, the fallback
// keeps the busiest callers and routes, so the mesh's common traffic to a
// workload without a section of its own still scores as known.
func TestGlobalPartKeepsTheMostFrequent(t *testing.T) {
	cfg := DefaultTrainConfig()
	cfg.MaxGlobalBytes = 4 << 10
	cfg.Now = time.Unix(1, 0)
	tr, _ := NewTrainer(cfg)
	f := newMeshFixture(200, 3)
	busy := Request{Method: "GET", Path: "/busy/1", Source: "spiffe://cluster.local/ns/shop/sa/busy", Destination: "svc-busy.shop"}
	for i := 0; i < 40_000; i++ {
		r := f.request()
		if i%4 == 0 {
			r = busy
			r.Path = "/busy/" + string(rune('0'+i%10))
		}
		tr.Observe(&r)
	}
	s, err := tr.Sections()
	if err != nil {
		t.Fatal(err)
	}
	if g := len(s.records[GlobalWorkload]); g > cfg.MaxGlobalBytes {
		t.Fatalf("global part %d bytes, budget %d", g, cfg.MaxGlobalBytes)
	}
	g, err := s.Workload("stranger.shop")
	if err != nil || g == nil || g.Name != GlobalWorkload {
		t.Fatalf("fallback: %v %+v", err, g)
	}
	if len(g.Sources) >= 200 || len(g.Routes) == 0 {
		t.Errorf("pruned global part: %d sources, %d routes", len(g.Sources), len(g.Routes))
	}
	r := busy
	r.Destination = "stranger.shop"
	if v := g.Score(&r); hasReason(v, ReasonNewCaller) || hasReason(v, ReasonNewRoute) {
		t.Errorf("the busiest caller and route are not in the pruned fallback: %+v", v)
	}
}
