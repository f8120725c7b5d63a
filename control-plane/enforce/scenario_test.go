package enforce_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/detect"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/control-plane/policy"
	"github.com/meshward/meshward/control-plane/quarantine"
	"github.com/meshward/meshward/internal/devdata"
	"github.com/meshward/meshward/internal/istiofake"
	"github.com/meshward/meshward/internal/kubetest"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/runner"
	"github.com/meshward/meshward/replay/source"
)

// trainTicket reads the TrainTicket service graph from the shared traces
// as mesh traffic: every service is spiffe://cluster.local/ns/train/sa/<svc>
// calling <svc>.train. The first twelve one-minute files are learned, the
// next four replayed.
func trainTicket(t *testing.T) (learn, replay []*source.Record) {
	dir := devdata.Dir(t, "trainticket_traces")
	files, err := filepath.Glob(filepath.Join(dir, "*", "*_trace.csv.gz"))
	if err != nil || len(files) < 16 {
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
		sortByTime(out)
		return out
	}
	return read(files[:12]), read(files[12:16])
}

// serviceGraph is what the learned traffic shows: each caller's callees,
// and the destinations and callers, sorted.
func serviceGraph(learn []*source.Record) (callees map[string]map[string]bool, dsts, srcs []string) {
	callees = map[string]map[string]bool{}
	services := map[string]bool{}
	for _, r := range learn {
		if callees[r.Request.Source] == nil {
			callees[r.Request.Source] = map[string]bool{}
		}
		callees[r.Request.Source][r.Request.Destination] = true
		services[r.Request.Destination] = true
	}
	for d := range services {
		dsts = append(dsts, d)
	}
	for s := range callees {
		srcs = append(srcs, s)
	}
	sort.Strings(dsts)
	sort.Strings(srcs)
	return callees, dsts, srcs
}

func sortByTime(recs []*source.Record) {
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].TS.Before(recs[j].TS) })
}

func learnModel(t *testing.T, learn []*source.Record) *models.Model {
	t.Helper()
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(0, 0)
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range learn {
		if !r.IsAttack() {
			tr.Observe(&r.Request)
		}
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// rules promote a dry run after two seconds, so both show within five.
func rules() decide.Rules {
	r := decide.DefaultRules()
	r.Enforce, r.PromoteAfter = true, 2*time.Second
	return r
}

// replayer runs records through the whole pipeline on simulated time:
// score natively, observe, tick the sink with each record's time, and call
// check after every record.
type replayer struct {
	t     *testing.T
	m     *models.Model
	ic    istioclient.Interface
	kc    kubernetes.Interface
	app   *quarantine.Applier
	loop  *enforce.Loop
	check func(r *source.Record)
}

func newReplayer(t *testing.T, m *models.Model, ic istioclient.Interface, kc kubernetes.Interface) *replayer {
	t.Helper()
	app, err := quarantine.New(quarantine.Config{Rules: rules()}, ic, kc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	loop, err := enforce.New(detect.DefaultConfig(), rules(), m, app, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return &replayer{t: t, m: m, ic: ic, kc: kc, app: app, loop: loop}
}

func (p *replayer) run(recs []*source.Record) {
	p.t.Helper()
	res, err := (&runner.Native{Model: p.m}).Run(recs)
	if err != nil {
		p.t.Fatal(err)
	}
	ctx := context.Background()
	for i, r := range recs {
		if _, err := p.loop.Observe(ctx, detect.Observation{TS: r.TS, Request: &r.Request, Score: res[i].Score, Flagged: res[i].Flagged, Reasons: res[i].Reasons, Pos: r.Pos}); err != nil {
			p.t.Fatalf("%s: %v", r.Pos, err)
		}
		if err := p.loop.Tick(ctx, r.TS); err != nil {
			p.t.Fatalf("tick at %v: %v", r.TS, err)
		}
		if p.check != nil {
			p.check(r)
		}
	}
}

func ownedPolicies(t *testing.T, ic istioclient.Interface) map[string]string {
	t.Helper()
	l, err := ic.SecurityV1().AuthorizationPolicies("").List(context.Background(), metav1.ListOptions{LabelSelector: policy.OwnedSelector})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{} // namespace/name → principal (+ " dry-run")
	for _, ap := range l.Items {
		v := ap.Annotations[policy.AnnotationPrincipal]
		if ap.Annotations[policy.AnnotationDryRun] == "true" {
			v += " dry-run"
		}
		out[ap.Namespace+"/"+ap.Name] = v
	}
	return out
}

// testScenario is the scenario on one API server: a benign replay
// writes nothing; a new dependency is not fenced; a protected namespace is
// never fenced; a compromised workload's quarantine (exactly its
// principal) is in the API server, as a dry run and then enforced, within
// 5 s of simulated time after its first new edge; a restart neither
// duplicates nor forgets; expiry removes it all.
func testScenario(t *testing.T, ic istioclient.Interface, kc kubernetes.Interface) {
	learn, benign := trainTicket(t)
	m := learnModel(t, learn)
	callees, dsts, srcs := serviceGraph(learn)
	start := benign[len(benign)/2].TS

	// 1. The benign replay of the same graph writes nothing.
	p := newReplayer(t, m, ic, kc)
	p.run(benign)
	if got := ownedPolicies(t, ic); len(got) != 0 {
		t.Fatalf("a benign replay wrote policies: %v (decisions %+v)", got, p.loop.Decisions())
	}

	// 2. A release of one service starts using one new dependency, steadily,
	// with ordinary statuses: perhaps flagged, never fenced.
	releaser := srcs[0]
	var newDep string
	for _, d := range dsts {
		if !callees[releaser][d] && d != releaser {
			newDep = d
			break
		}
	}
	release := append([]*source.Record(nil), benign...)
	for i := 0; i < 120; i++ {
		release = append(release, &source.Record{TS: start.Add(time.Duration(i) * time.Second), Label: source.LabelNormal,
			Request: models.Request{Method: "GET", Path: "/api/v1/" + newDep + "/query", Source: releaser, Destination: newDep, Status: 200, ResponseBytes: 512}})
	}
	sortByTime(release)
	p = newReplayer(t, m, ic, kc)
	p.run(release)
	if got := ownedPolicies(t, ic); len(got) != 0 {
		t.Fatalf("a new dependency (%s → %s) was fenced: %v", releaser, newDep, got)
	}

	// 3. A protected namespace misbehaving is never fenced.
	istiod := "spiffe://cluster.local/ns/istio-system/sa/istiod"
	loud := append([]*source.Record(nil), benign...)
	for i, d := range dsts[:6] {
		loud = append(loud, &source.Record{TS: start.Add(time.Duration(i) * 500 * time.Millisecond),
			Request: models.Request{Method: "GET", Path: "/admin", Source: istiod, Destination: d, Status: 403}})
	}
	sortByTime(loud)
	p = newReplayer(t, m, ic, kc)
	p.run(loud)
	if got := ownedPolicies(t, ic); len(got) != 0 {
		t.Fatalf("a protected namespace was fenced: %v", got)
	}
	suppressed := 0
	for _, d := range p.loop.Decisions() {
		if d.Principal == istiod && d.Suppressed != "" {
			suppressed++
		}
	}
	if suppressed == 0 {
		t.Errorf("istiod's fan-out made no (suppressed) decision: %+v", p.loop.Decisions())
	}

	// 4. The service with the fewest callees is compromised and fans out.
	victim := srcs[0]
	for _, s := range srcs {
		if len(callees[s]) < len(callees[victim]) {
			victim = s
		}
	}
	attack := append([]*source.Record(nil), benign...)
	var firstEdge time.Time
	n := 0
	for _, d := range dsts {
		if callees[victim][d] || n >= 6 {
			continue
		}
		at := start.Add(time.Duration(n) * 700 * time.Millisecond)
		if firstEdge.IsZero() {
			firstEdge = at
		}
		attack = append(attack, &source.Record{TS: at, Label: "attack",
			Request: models.Request{Method: "GET", Path: "/api/v1/admin/users", Source: victim, Destination: d, Status: 403}})
		n++
	}
	sortByTime(attack)
	var dryAt, enforcedAt time.Time
	p = newReplayer(t, m, ic, kc)
	p.check = func(r *source.Record) {
		if r.TS.Before(firstEdge) || r.TS.After(firstEdge.Add(10*time.Second)) || !enforcedAt.IsZero() {
			return
		}
		got := ownedPolicies(t, ic)
		for name, v := range got {
			switch v {
			case victim + " dry-run":
				if dryAt.IsZero() {
					dryAt = r.TS
				}
			case victim:
				if enforcedAt.IsZero() {
					enforcedAt = r.TS
				}
			default:
				t.Fatalf("policy %s is for %q, want only %s's", name, v, victim)
			}
		}
	}
	p.run(attack)
	if dryAt.IsZero() || dryAt.Sub(firstEdge) > 5*time.Second {
		t.Errorf("dry-run quarantine of %s in the API server at %v after its first new edge, want ≤ 5 s", victim, dryAt.Sub(firstEdge))
	}
	if enforcedAt.IsZero() || enforcedAt.Sub(firstEdge) > 5*time.Second {
		t.Errorf("enforced quarantine of %s at %v after its first new edge, want ≤ 5 s", victim, enforcedAt.Sub(firstEdge))
	}
	held := ownedPolicies(t, ic)
	if len(held) < 2 {
		t.Fatalf("quarantine of %s: %v, want a policy per new destination", victim, held)
	}
	for name, v := range held {
		if v != victim {
			t.Errorf("after the attack, %s: %q, want %s enforced", name, v, victim)
		}
	}
	t.Logf("TrainTicket: %s fenced off %d destinations: dry run %v and enforced %v (simulated) after its first new edge",
		victim, len(held), dryAt.Sub(firstEdge), enforcedAt.Sub(firstEdge))

	// 5. A restart rebuilds the same state; replaying the attack again
	// duplicates nothing.
	q := newReplayer(t, m, ic, kc)
	if before, after := p.app.List(), q.app.List(); len(after) != 1 || len(after[0].Policies) != len(before[0].Policies) || after[0].Decision.ID != before[0].Decision.ID {
		t.Fatalf("after a restart: %+v, before %+v", after, before)
	}
	q.run(attack)
	if again := ownedPolicies(t, ic); len(again) != len(held) || q.app.Active() != 1 {
		t.Fatalf("replaying the attack after a restart: %d policies (%d before), %d quarantines", len(again), len(held), q.app.Active())
	}

	// 6. Expiry removes what was written.
	exp := q.app.List()[0].Decision.Expires
	if err := q.loop.Tick(context.Background(), exp); err != nil {
		t.Fatal(err)
	}
	if got := ownedPolicies(t, ic); len(got) != 0 || q.app.Active() != 0 {
		t.Fatalf("after expiry: %v", got)
	}

	// 7. A slow fan-out: the compromised service reaches one new
	// destination every three minutes for 45 minutes (simulated), never
	// two within the detection window; it adds up over the horizon and is
	// fenced.
	slow := append([]*source.Record(nil), benign...)
	slowStart := benign[len(benign)-1].TS.Add(time.Minute)
	n = 0
	for _, d := range dsts {
		if callees[victim][d] || d == victim || n >= 15 {
			continue
		}
		slow = append(slow, &source.Record{TS: slowStart.Add(time.Duration(n) * 3 * time.Minute), Label: "attack",
			Request: models.Request{Method: "GET", Path: "/api/v1/" + d + "/query", Source: victim, Destination: d, Status: 200, ResponseBytes: 512}})
		n++
	}
	if n < 10 {
		t.Fatalf("only %d destinations %s never called", n, victim)
	}
	sortByTime(slow)
	var slowAt time.Time
	p = newReplayer(t, m, ic, kc)
	p.check = func(r *source.Record) {
		if slowAt.IsZero() && len(ownedPolicies(t, ic)) > 0 {
			slowAt = r.TS
		}
	}
	p.run(slow)
	if slowAt.IsZero() {
		t.Fatalf("a fan-out of %d destinations, one every 3 minutes, was not fenced: decisions %+v", n, p.loop.Decisions())
	}
	for name, v := range ownedPolicies(t, ic) {
		if !strings.HasPrefix(v, victim) {
			t.Errorf("slow fan-out: policy %s for %q", name, v)
		}
	}
	t.Logf("slow fan-out of %s fenced %v after its first new destination", victim, slowAt.Sub(slowStart))
	exp = p.app.List()[0].Decision.Expires
	if err := p.loop.Tick(context.Background(), exp); err != nil {
		t.Fatal(err)
	}
}

func TestScenarioFake(t *testing.T) {
	testScenario(t, istiofake.New(), kubefake.NewClientset())
}

// TestScenarioKube is the scenario against a real kube-apiserver with the
// Istio CRDs.
func TestScenarioKube(t *testing.T) {
	env := kubetest.Start(t)
	for _, ns := range []string{"train", "istio-system"} {
		if _, err := env.Clientset.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	testScenario(t, ic, env.Clientset)
}
