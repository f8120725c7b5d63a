package detect_test

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/decide"
	. "github.com/meshward/meshward/control-plane/detect"
	"github.com/meshward/meshward/internal/devdata"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/gen"
	"github.com/meshward/meshward/replay/runner"
	"github.com/meshward/meshward/replay/source"
)

// pipeline learns from learn, scores monitor natively, and feeds the
// detector in time order, as meshward run does.
func pipeline(t testing.TB, learn, monitor []*source.Record) (*Detector, []*Incident) {
	t.Helper()
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(0, 0)
	tr, _ := models.NewTrainer(cfg)
	for _, r := range learn {
		if !r.IsAttack() {
			tr.Observe(&r.Request)
		}
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	res, _ := (&runner.Native{Model: m}).Run(monitor)
	d, err := New(DefaultConfig(), m)
	if err != nil {
		t.Fatal(err)
	}
	var opened []*Incident
	for i, r := range monitor {
		if inc := d.Observe(Observation{TS: r.TS, Request: &r.Request, Score: res[i].Score, Flagged: res[i].Flagged, Reasons: res[i].Reasons, Pos: r.Pos}); inc != nil {
			opened = append(opened, inc)
		}
	}
	return d, opened
}

func splitAt(recs []*source.Record, at time.Time) (before, after []*source.Record) {
	for _, r := range recs {
		if r.TS.Before(at) {
			before = append(before, r)
		} else {
			after = append(after, r)
		}
	}
	return before, after
}

func normalOnly(recs []*source.Record) []*source.Record {
	var out []*source.Record
	for _, r := range recs {
		if !r.IsAttack() {
			out = append(out, r)
		}
	}
	return out
}

func genTraffic(t testing.TB) (*gen.Generator, gen.Config, []*source.Record) {
	cfg := gen.DefaultConfig()
	cfg.Requests = 20_000
	g, err := gen.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g, cfg, g.Generate()
}

func TestCompromisedWorkloadIsCaughtWithinSeconds(t *testing.T) {
	_, cfg, recs := genTraffic(t)
	attackAt := cfg.Start.Add(time.Duration(cfg.AttackAt * float64(cfg.Duration)))
	learn, monitor := splitAt(recs, attackAt)
	_, opened := pipeline(t, learn, monitor)
	var lateral []*source.Record
	for _, r := range monitor {
		if r.AttackType == "lateral-movement" {
			lateral = append(lateral, r)
		}
	}
	principal := lateral[0].Request.Source
	var found *Incident
	for _, inc := range opened {
		if inc.Principal == principal {
			found = inc
		} else {
			t.Errorf("incident for %s, which did nothing wrong: %v", inc.Principal, inc.Signals)
		}
	}
	if found == nil {
		t.Fatalf("no incident for the compromised %s", principal)
	}
	if delay := found.Opened.Sub(lateral[0].TS); delay > 5*time.Second || delay < 0 {
		t.Errorf("incident opened %v after the first new edge, want ≤ 5 s", delay)
	}
	if len(found.NewEdges) < 2 || len(found.Evidence) == 0 || len(found.Signals) == 0 {
		t.Errorf("incident lacks evidence: %+v", found)
	}
	d := decide.Decide(found, decide.DefaultRules(), 0, found.Opened)
	if d.Suppressed != "" || d.Mode != decide.DryRun || len(d.Deny) < 2 {
		t.Errorf("decision %+v", d)
	}
}

func TestBenignReplayOpensNothing(t *testing.T) {
	_, cfg, recs := genTraffic(t)
	attackAt := cfg.Start.Add(time.Duration(cfg.AttackAt * float64(cfg.Duration)))
	clean := normalOnly(recs)
	learn, monitor := splitAt(clean, attackAt)
	if _, opened := pipeline(t, learn, monitor); len(opened) != 0 {
		t.Errorf("benign replay opened %d incidents, first %+v", len(opened), opened[0])
	}
}

func TestANewDependencyIsNotFenced(t *testing.T) {
	g, cfg, recs := genTraffic(t)
	attackAt := cfg.Start.Add(time.Duration(cfg.AttackAt * float64(cfg.Duration)))
	clean := normalOnly(recs)
	learn, monitor := splitAt(clean, attackAt)
	// A release of checkout starts calling ratings, steadily, with 200s.
	for i := 0; i < 200; i++ {
		monitor = append(monitor, &source.Record{TS: attackAt.Add(time.Duration(i) * 2 * time.Second), Label: source.LabelNormal,
			Request: models.Request{Method: "GET", Path: fmt.Sprintf("/api/v1/ratings/%d", i), Source: g.Principal("checkout"),
				Destination: g.Workload("ratings"), Status: 200, ResponseBytes: 400}})
	}
	sort.SliceStable(monitor, func(i, j int) bool { return monitor[i].TS.Before(monitor[j].TS) })
	if _, opened := pipeline(t, learn, monitor); len(opened) != 0 {
		t.Errorf("a new dependency at a steady rate was fenced: %+v", opened[0])
	}
}

func TestProtectedNamespaceIsNeverFenced(t *testing.T) {
	g, cfg, recs := genTraffic(t)
	attackAt := cfg.Start.Add(time.Duration(cfg.AttackAt * float64(cfg.Duration)))
	learn, _ := splitAt(recs, attackAt)
	var monitor []*source.Record
	istiod := "spiffe://cluster.local/ns/istio-system/sa/istiod"
	for i, s := range []string{"users", "orders", "payment", "catalog"} {
		monitor = append(monitor, &source.Record{TS: attackAt.Add(time.Duration(i) * time.Second),
			Request: models.Request{Method: "GET", Path: "/admin", Source: istiod, Destination: g.Workload(s), Status: 403}})
	}
	_, opened := pipeline(t, learn, monitor)
	if len(opened) != 1 {
		t.Fatalf("%d incidents, want the misbehaving istiod's", len(opened))
	}
	d := decide.Decide(opened[0], decide.DefaultRules(), 0, attackAt)
	if d.Suppressed == "" {
		t.Errorf("istio-system was fenced: %+v", d)
	}
}

// TestTrainTicketScenario replays the TrainTicket service graph from the
// shared traces to learn, then compromises one service that fans out to
// services it never called: exactly that principal is caught, within 5 s of
// its first new edge; the benign replay of later traces opens nothing.
func TestTrainTicketScenario(t *testing.T) {
	dir := devdata.Dir(t, "trainticket_traces")
	files, err := filepath.Glob(filepath.Join(dir, "*", "*_trace.csv.gz"))
	if err != nil || len(files) < 20 {
		t.Fatalf("TrainTicket traces not found under %s: %v", dir, err)
	}
	sort.Strings(files)
	read := func(paths []string) []*source.Record {
		var out []*source.Record
		for _, p := range paths {
			err := source.ReadFile(p, source.FileOptions{}, func(r *source.Record) error {
				r.Request.Source = "spiffe://cluster.local/ns/train/sa/" + r.Request.Source
				r.Request.Destination += ".train"
				out = append(out, r)
				return nil
			}, func(source.Problem) {})
			if err != nil {
				t.Fatal(err)
			}
		}
		sort.SliceStable(out, func(i, j int) bool { return out[i].TS.Before(out[j].TS) })
		return out
	}
	learn, benign := read(files[:12]), read(files[12:16])
	if _, opened := pipeline(t, learn, benign); len(opened) != 0 {
		t.Errorf("benign TrainTicket replay opened %d incidents: %v %v", len(opened), opened[0].Principal, opened[0].Signals)
	}
	// Compromise the service with the fewest callees.
	callees := map[string]map[string]bool{}
	services := map[string]bool{}
	for _, r := range learn {
		if callees[r.Request.Source] == nil {
			callees[r.Request.Source] = map[string]bool{}
		}
		callees[r.Request.Source][r.Request.Destination] = true
		services[r.Request.Destination] = true
	}
	var victim string
	for s := range callees {
		if victim == "" || len(callees[s]) < len(callees[victim]) || len(callees[s]) == len(callees[victim]) && s < victim {
			victim = s
		}
	}
	start := benign[len(benign)/2].TS
	attack := append([]*source.Record(nil), benign...)
	n := 0
	var dsts []string
	for d := range services {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	for _, d := range dsts {
		if callees[victim][d] || n >= 6 {
			continue
		}
		attack = append(attack, &source.Record{TS: start.Add(time.Duration(n) * 700 * time.Millisecond), Label: "attack",
			Request: models.Request{Method: "GET", Path: "/api/v1/admin/users", Source: victim, Destination: d, Status: 403}})
		n++
	}
	sort.SliceStable(attack, func(i, j int) bool { return attack[i].TS.Before(attack[j].TS) })
	_, opened := pipeline(t, learn, attack)
	if len(opened) != 1 || opened[0].Principal != victim {
		var got []string
		for _, inc := range opened {
			got = append(got, inc.Principal)
		}
		t.Fatalf("incidents for %v, want exactly %s", got, victim)
	}
	if delay := opened[0].Opened.Sub(start); delay > 5*time.Second {
		t.Errorf("caught %v after the first new edge, want ≤ 5 s", delay)
	}
	t.Logf("TrainTicket: learned %d requests, %d services; %s caught %v after its first new edge with %v",
		len(learn), len(services), victim, opened[0].Opened.Sub(start), opened[0].Signals)
}

// slowModel learns web calling cart only.
func slowModel(t *testing.T) *models.Model {
	t.Helper()
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(0, 0)
	tr, _ := models.NewTrainer(cfg)
	for i := 0; i < 400; i++ {
		tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/items/%d", i), Source: "spiffe://cluster.local/ns/shop/sa/web", Destination: "cart.shop", Status: 200})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSlowFanOutOpensAnIncident: one new destination every three minutes
// (simulated time) never makes two within the one-minute window, but adds
// up over the horizon: an incident opens within the 45 minutes; one new
// destination a minute for one destination only (a release) opens nothing.
func TestSlowFanOutOpensAnIncident(t *testing.T) {
	m := slowModel(t)
	d, err := New(DefaultConfig(), m)
	if err != nil {
		t.Fatal(err)
	}
	web := "spiffe://cluster.local/ns/shop/sa/web"
	if need := d.SlowThreshold(web); need < 3 || need > 8 {
		t.Errorf("slow threshold for a source calling one destination: %v", need)
	}
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var opened *Incident
	for i := 0; i < 15 && opened == nil; i++ {
		at := start.Add(time.Duration(i) * 3 * time.Minute)
		// Ordinary traffic between the new edges.
		for k := 0; k < 20; k++ {
			d.Observe(Observation{TS: at.Add(time.Duration(k) * 5 * time.Second), Score: 0.1,
				Request: &models.Request{Method: "GET", Path: "/items/1", Source: web, Destination: "cart.shop", Status: 200}})
		}
		opened = d.Observe(Observation{TS: at.Add(2 * time.Minute), Score: 0.95, Flagged: true,
			Request: &models.Request{Method: "GET", Path: "/admin", Source: web, Destination: fmt.Sprintf("svc%d.shop", i), Status: 200}})
	}
	if opened == nil {
		t.Fatal("a slow fan-out over 45 minutes opened no incident")
	}
	if !strings.Contains(strings.Join(opened.Signals, " "), "slow_new_destinations") || len(opened.NewEdges) < 3 {
		t.Errorf("incident %+v", opened)
	}
	t.Logf("slow fan-out caught after %v with %v", opened.Opened.Sub(start), opened.Signals)

	// A release: one new dependency, used every ten seconds for 45 minutes.
	d, _ = New(DefaultConfig(), m)
	for i := 0; i < 270; i++ {
		if inc := d.Observe(Observation{TS: start.Add(time.Duration(i) * 10 * time.Second), Score: 0.9, Flagged: true,
			Request: &models.Request{Method: "GET", Path: "/api/ratings", Source: web, Destination: "ratings.shop", Status: 200}}); inc != nil {
			t.Fatalf("a release was taken for a slow fan-out: %v", inc.Signals)
		}
	}
}

// TestDetectorStateIsBounded: forged principals beyond MaxSources evict
// the least recently seen one without an incident first; one principal's
// new destinations and edges are capped.
func TestDetectorStateIsBounded(t *testing.T) {
	m := slowModel(t)
	cfg := DefaultConfig()
	cfg.MaxSources, cfg.MaxNewDestinations, cfg.MaxNewEdges = 50, 8, 4
	d, err := New(cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	// The real attacker fans out and gets an incident first.
	attacker := "spiffe://cluster.local/ns/shop/sa/attacker"
	var inc *Incident
	for i := 0; i < 100; i++ {
		if got := d.Observe(Observation{TS: start.Add(time.Duration(i) * time.Millisecond), Score: 0.9, Flagged: true,
			Request: &models.Request{Method: "GET", Path: fmt.Sprintf("/r%d", i), Source: attacker, Destination: fmt.Sprintf("s%d.shop", i), Status: 403}}); got != nil {
			inc = got
		}
	}
	if inc == nil || len(inc.NewEdges) != cfg.MaxNewEdges {
		t.Fatalf("attacker's incident %+v, want %d new edges listed", inc, cfg.MaxNewEdges)
	}
	// 1,000 forged principals, one request each.
	for i := 0; i < 1000; i++ {
		d.Observe(Observation{TS: start.Add(time.Second + time.Duration(i)*time.Millisecond), Score: 0.1,
			Request: &models.Request{Method: "GET", Path: "/", Source: fmt.Sprintf("spiffe://cluster.local/ns/x/sa/decoy%d", i), Destination: "cart.shop", Status: 200}})
	}
	if d.Evicted() != 1000+1-int64(cfg.MaxSources) {
		t.Errorf("evicted %d, want %d", d.Evicted(), 1000+1-cfg.MaxSources)
	}
	// The attacker, whose incident is open, was kept: its requests join it
	// and open nothing new.
	if got := d.Observe(Observation{TS: start.Add(2 * time.Second), Request: &models.Request{Method: "GET", Path: "/x", Source: attacker, Destination: "more.shop", Status: 403}}); got != nil {
		t.Errorf("the attacker's state was evicted: a second incident %v", got.ID)
	}
	d.Forget(attacker)
	if got := d.Observe(Observation{TS: start.Add(3 * time.Second), Request: &models.Request{Method: "GET", Path: "/x", Source: attacker, Destination: "a.shop", Status: 403}}); got != nil {
		t.Errorf("one request after Forget opened %v", got.Signals)
	}
	if got := d.Observe(Observation{TS: start.Add(4 * time.Second), Request: &models.Request{Method: "GET", Path: "/x", Source: attacker, Destination: "b.shop", Status: 403}}); got == nil {
		t.Error("after Forget, a new fan-out opened no new incident")
	}
}
