// Package meshgen generates the traffic of a synthetic mesh of n services —
// each with a few callers and routes; routes take ids, enumerated and
// free-text parameters; callers send their own user-agent — for the scale
// tests and benchmarks of the packages that serve models (xds, trainer,
// wasmplugin, bench). It is the generator of the models package's own mesh
// benchmarks (models/mesh_test.go, which cannot import it), request for
// request: TestSameAsTheModelsFixture there and here pin the same digest.
package meshgen

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/meshward/meshward/models"
)

// Mesh generates the requests of a synthetic mesh.
type Mesh struct {
	services []service
	rng      *rand.Rand
}

type service struct {
	name    string
	callers []string
	routes  []route
}

type route struct {
	method, path string // path with %d for an id
	params       []string
}

var words = []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"}

// New returns a mesh of n services; a seed gives the same mesh and
// requests.
func New(n int, seed uint64) *Mesh {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e37))
	f := &Mesh{rng: rng}
	for i := 0; i < n; i++ {
		s := service{name: fmt.Sprintf("svc-%02d.shop", i)}
		for c := 0; c < 2+rng.IntN(4); c++ {
			s.callers = append(s.callers, fmt.Sprintf("spiffe://cluster.local/ns/shop/sa/svc-%02d", rng.IntN(n)))
		}
		for r := 0; r < 4+rng.IntN(8); r++ {
			rt := route{method: []string{"GET", "GET", "POST", "PUT"}[rng.IntN(4)], path: fmt.Sprintf("/api/v1/%s/%%d/%s", words[rng.IntN(10)], words[rng.IntN(10)])}
			for p := 0; p < rng.IntN(4); p++ {
				rt.params = append(rt.params, []string{"lang", "page", "q", "sort"}[p])
			}
			s.routes = append(s.routes, rt)
		}
		f.services = append(f.services, s)
	}
	return f
}

// Services returns the services' workload names, in order.
func (f *Mesh) Services() []string {
	out := make([]string, len(f.services))
	for i, s := range f.services {
		out[i] = s.name
	}
	return out
}

// Request returns one normal request of the mesh, to a service drawn at
// random.
func (f *Mesh) Request() models.Request {
	return f.request(&f.services[f.rng.IntN(len(f.services))])
}

// RequestTo returns one normal request to service i.
func (f *Mesh) RequestTo(i int) models.Request {
	return f.request(&f.services[i])
}

func (f *Mesh) request(s *service) models.Request {
	caller := s.callers[f.rng.IntN(len(s.callers))]
	rt := &s.routes[f.rng.IntN(len(s.routes))]
	r := models.Request{Method: rt.method, Path: fmt.Sprintf(rt.path, f.rng.IntN(100000)), Source: caller, Destination: s.name}
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
	r.Headers = []models.Header{
		{Name: "user-agent", Value: "svc-client/1.4 (" + caller[len(caller)-6:] + ")"},
		{Name: "accept", Value: "application/json"},
		{Name: "x-request-id", Value: fmt.Sprintf("%016x", f.rng.Uint64())},
	}
	if rt.method != "GET" {
		r.Headers = append(r.Headers, models.Header{Name: "content-type", Value: "application/json"})
		r.Body = []byte(fmt.Sprintf(`{"id":%d,"name":"%s"}`, f.rng.IntN(1000), words[f.rng.IntN(10)]))
	}
	return r
}

// Digest hashes the first n requests of a mesh of services services (seed
// 7), to check two copies of the generator agree.
func Digest(services, n int) string {
	f := New(services, 7)
	h := uint64(14695981039346656037)
	for i := 0; i < n; i++ {
		r := f.Request()
		for _, s := range []string{r.Method, r.Path, r.Query, r.Source, r.Destination, string(r.Body), r.Headers[0].Value, r.Headers[2].Value} {
			for j := 0; j < len(s); j++ {
				h ^= uint64(s[j])
				h *= 1099511628211
			}
			h ^= 0xff
			h *= 1099511628211
		}
	}
	return fmt.Sprintf("%016x", h)
}

// Train trains a mesh of services services (seed 7) on perService requests
// to each, as the control plane does: one workload at a time, each finished
// before the next, so that neither the requests nor the statistics of the
// whole mesh are ever held at once.
func Train(services, perService int, cfg models.TrainConfig) (*models.Sections, error) {
	s, _, err := TrainTimed(services, perService, cfg)
	return s, err
}

// TrainTimed is Train, also returning the time spent training (generating
// the requests not counted: the control plane reads them from its store).
func TrainTimed(services, perService int, cfg models.TrainConfig) (*models.Sections, time.Duration, error) {
	f := New(services, 7)
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		return nil, 0, err
	}
	var spent time.Duration
	reqs := make([]models.Request, perService)
	for i := range f.services {
		for j := range reqs {
			reqs[j] = f.RequestTo(i)
		}
		start := time.Now()
		for j := range reqs {
			tr.Observe(&reqs[j])
		}
		tr.Finish(f.services[i].name)
		spent += time.Since(start)
	}
	start := time.Now()
	s, err := tr.Sections()
	return s, spent + time.Since(start), err
}
