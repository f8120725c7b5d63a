package models

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// meshFixture generates traffic of a synthetic mesh of n services: each has
// a few callers and routes, routes take ids, enumerated and free-text
// parameters, and callers send their own user-agent. It stands in for real
// mesh traffic in size and shape, for benchmarks and the model size budget.
type meshFixture struct {
	services []meshService
	rng      *rand.Rand
}

type meshService struct {
	name    string
	callers []string
	routes  []meshRoute
}

type meshRoute struct {
	method, path string // path with %d for an id
	params       []string
}

var words = []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"}

func newMeshFixture(n int, seed uint64) *meshFixture {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e37))
	f := &meshFixture{rng: rng}
	for i := 0; i < n; i++ {
		s := meshService{name: fmt.Sprintf("svc-%02d.shop", i)}
		for c := 0; c < 2+rng.IntN(4); c++ {
			s.callers = append(s.callers, fmt.Sprintf("spiffe://cluster.local/ns/shop/sa/svc-%02d", rng.IntN(n)))
		}
		for r := 0; r < 4+rng.IntN(8); r++ {
			rt := meshRoute{method: []string{"GET", "GET", "POST", "PUT"}[rng.IntN(4)], path: fmt.Sprintf("/api/v1/%s/%%d/%s", words[rng.IntN(10)], words[rng.IntN(10)])}
			for p := 0; p < rng.IntN(4); p++ {
				rt.params = append(rt.params, []string{"lang", "page", "q", "sort"}[p])
			}
			s.routes = append(s.routes, rt)
		}
		f.services = append(f.services, s)
	}
	return f
}

// request returns one normal request of the mesh.
func (f *meshFixture) request() Request {
	s := &f.services[f.rng.IntN(len(f.services))]
	caller := s.callers[f.rng.IntN(len(s.callers))]
	rt := &s.routes[f.rng.IntN(len(s.routes))]
	r := Request{Method: rt.method, Path: fmt.Sprintf(rt.path, f.rng.IntN(100000)), Source: caller, Destination: s.name}
	q := ""
	for i, p := range rt.params {
		if i > 0 {
			q += "&"
		}
		switch p {
		case "lang":
			q += "lang=" + []string{"en", "de", "fr"}[f.rng.IntN(3)]
		case "page":
			q += fmt.Sprintf("page=%d", f.rng.IntN(50))
		case "q":
			q += "q=" + words[f.rng.IntN(10)] + "+" + words[f.rng.IntN(10)]
		case "sort":
			q += "sort=" + []string{"asc", "desc"}[f.rng.IntN(2)]
		}
	}
	r.Query = q
	r.Headers = []Header{
		{Name: "user-agent", Value: "svc-client/1.4 (" + caller[len(caller)-6:] + ")"},
		{Name: "accept", Value: "application/json"},
		{Name: "x-request-id", Value: fmt.Sprintf("%016x", f.rng.Uint64())},
	}
	if rt.method != "GET" {
		r.Headers = append(r.Headers, Header{Name: "content-type", Value: "application/json"})
		r.Body = []byte(fmt.Sprintf(`{"id":%d,"name":"%s"}`, f.rng.IntN(1000), words[f.rng.IntN(10)]))
	}
	return r
}

// TestMeshFixtureDigest pins the fixture's first requests: internal/meshgen
// is the same generator for the packages that cannot use this one, and pins
// the same digest.
func TestMeshFixtureDigest(t *testing.T) {
	f := newMeshFixture(50, 7)
	h := uint64(14695981039346656037)
	for i := 0; i < 2000; i++ {
		r := f.request()
		for _, s := range []string{r.Method, r.Path, r.Query, r.Source, r.Destination, string(r.Body), r.Headers[0].Value, r.Headers[2].Value} {
			for j := 0; j < len(s); j++ {
				h ^= uint64(s[j])
				h *= 1099511628211
			}
			h ^= 0xff
			h *= 1099511628211
		}
	}
	if got := fmt.Sprintf("%016x", h); got != "f558442979221275" {
		t.Errorf("digest %s: the fixture changed; change internal/meshgen alike", got)
	}
}

func trainMesh(t testing.TB, services, requests int) (*Model, *meshFixture) {
	t.Helper()
	f := newMeshFixture(services, 7)
	tr := newTestTrainer(t)
	for i := 0; i < requests; i++ {
		r := f.request()
		tr.Observe(&r)
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m, f
}

// TestFiftyServiceModelFitsBudget checks the size target: a 50-service model
// must stay well inside a Kubernetes object (≤ 256 KB).
func TestFiftyServiceModelFitsBudget(t *testing.T) {
	m, f := trainMesh(t, 50, 100_000)
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("50-service model: %d bytes, %d workloads", len(b), len(m.Workloads))
	if len(b) > 256<<10 {
		t.Errorf("50-service model is %d bytes, budget 256 KiB", len(b))
	}
	// And it scores its own kind of traffic as normal: the measured false-
	// positive rate on fresh normal requests stays near the 0.1 % target.
	flagged := 0
	const n = 20_000
	for i := 0; i < n; i++ {
		r := f.request()
		if v := m.Score(&r); v.Score > m.Meta.Threshold {
			flagged++
		}
	}
	fpr := float64(flagged) / n
	t.Logf("false-positive rate on %d fresh normal requests: %.3f%% (target %.1f%%)", n, 100*fpr, 100*m.Meta.TargetFPR)
	if fpr > 10*m.Meta.TargetFPR {
		t.Errorf("false-positive rate %.3f%%, target %.1f%%", 100*fpr, 100*m.Meta.TargetFPR)
	}
}

func BenchmarkScoreMesh(b *testing.B) {
	m, f := trainMesh(b, 50, 100_000)
	reqs := make([]Request, 1024)
	for i := range reqs {
		reqs[i] = f.request()
	}
	s := new(Scratch)
	// Training's garbage is collected first: compiled to wasm, a collection
	// left running would keep the write barrier on through the loop.
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r := &reqs[i%len(reqs)]
		m.Workload(r.Destination).ScoreWith(r, s)
	}
}

// BenchmarkTrainMillion reports the time to train on one million requests
// of the 50-service mesh.
func BenchmarkTrainMillion(b *testing.B) {
	f := newMeshFixture(50, 7)
	reqs := make([]Request, 1<<16)
	for i := range reqs {
		reqs[i] = f.request()
	}
	for b.Loop() {
		tr, _ := NewTrainer(DefaultTrainConfig())
		for i := 0; i < 1_000_000; i++ {
			tr.Observe(&reqs[i%len(reqs)])
		}
		if _, err := tr.Model(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkModelSize reports the encoded size of a 50-service model trained
// on 100,000 requests (target ≤ 256 KB).
func BenchmarkModelSize(b *testing.B) {
	m, _ := trainMesh(b, 50, 100_000)
	var n int
	for b.Loop() {
		enc, err := Encode(m)
		if err != nil {
			b.Fatal(err)
		}
		n = len(enc)
	}
	b.ReportMetric(float64(n), "model-bytes")
}

// FuzzExtract feeds arbitrary requests through parameter extraction and
// scoring: no panic, bounded output, scores in range.
func FuzzExtract(f *testing.F) {
	m, _ := trainMesh(f, 5, 2000)
	w := m.Workload("svc-00.shop")
	s := new(Scratch)
	f.Add("GET", "/api/v1/items/1/x", "a=1&b=%zz&&=c&d", "user-agent", "x", []byte("k=v&x=%3Cs"), "application/x-www-form-urlencoded")
	f.Add("POST", "/", "%", "", "", []byte{0xff, 0x00}, "application/json")
	f.Fuzz(func(t *testing.T, method, path, query, hname, hvalue string, body []byte, ct string) {
		r := Request{Method: method, Path: path, Query: query, Body: body, Source: "s", Destination: "svc-00.shop",
			Headers: []Header{{Name: hname, Value: hvalue}, {Name: "content-type", Value: ct}}}
		v := w.ScoreWith(&r, s)
		if v.Score < 0 || v.Score > 1 || math.IsNaN(v.Score) || v.NReason > MaxReasons || s.params.n > maxParams {
			t.Fatalf("verdict %+v, %d params", v, s.params.n)
		}
	})
}

// TestRespondWithEqualsScoringAtOnce checks the filter's two phases against
// scoring with the response known: the same score, to the bit.
func TestRespondWithEqualsScoringAtOnce(t *testing.T) {
	m, f := trainMeshWithResponses(t)
	s := new(Scratch)
	for i := 0; i < 2000; i++ {
		r := f.request()
		r.Status = []int{200, 200, 200, 404, 500, 403}[i%6]
		r.ResponseBytes = int64([]int{300, 2000, 50_000_000}[i%3])
		w := m.Workload(r.Destination)
		atOnce := w.ScoreWith(&r, s)
		req := r
		req.Status, req.ResponseBytes = 0, 0
		phased := w.RespondWith(&r, w.ScoreWith(&req, s))
		if atOnce.Score != phased.Score || atOnce.Surprise != phased.Surprise || atOnce.NReason != phased.NReason {
			t.Fatalf("request %d: at once %+v, in two phases %+v", i, atOnce, phased)
		}
	}
}

func trainMeshWithResponses(t testing.TB) (*Model, *meshFixture) {
	f := newMeshFixture(20, 3)
	cfg := DefaultTrainConfig()
	cfg.Now = time.Unix(1_700_000_000, 0)
	tr, _ := NewTrainer(cfg)
	for i := 0; i < 40_000; i++ {
		r := f.request()
		r.Status, r.ResponseBytes = 200, int64(500+f.rng.IntN(3000))
		if i%97 == 0 {
			r.Status = 503
		}
		tr.Observe(&r)
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m, f
}
