package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/control-plane/leader"
	"github.com/meshward/meshward/control-plane/policy"
	"github.com/meshward/meshward/control-plane/quarantine"
	"github.com/meshward/meshward/internal/kubetest"
	"github.com/meshward/meshward/internal/redistest"
)

// kubeServe is a control plane on a real redis-server and a real
// kube-apiserver: the Lease elects, quarantines are AuthorizationPolicies.
type kubeServe struct {
	env   *kubetest.Env
	ic    istioclient.Interface
	redis string
	lease string // the Lease's namespace
}

func newKubeServe(t *testing.T, namespaces ...string) *kubeServe {
	env := kubetest.Start(t)
	for _, ns := range namespaces {
		if _, err := env.Clientset.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &kubeServe{env: env, ic: ic, redis: redistest.Start(t).Addr, lease: env.Namespace(t, "lease")}
}

// replica starts one control-plane replica; change adjusts its rules.
func (k *kubeServe) replica(t *testing.T, change func(*Config)) *Server {
	t.Helper()
	cfg := testConfig()
	// The sidecars of every destination these tests ship records about.
	b := identity.Binding{TrustDomain: cfg.TrustDomain}
	for _, w := range decideWorkloads() {
		id, _ := b.Identity(w)
		cfg.Collector.Tokens[sidecarToken(w)] = id
	}
	cfg.Redis = k.redis
	cfg.Kube, cfg.LeaseNamespace = k.env.Config, k.lease
	cfg.TickEvery = 50 * time.Millisecond
	if change != nil {
		change(&cfg)
	}
	app, err := quarantine.New(quarantine.Config{Rules: cfg.Rules}, k.ic, k.env.Clientset, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Quarantine = app
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// decideWorkloads are the destinations the tests below ship records about.
func decideWorkloads() []string {
	out := []string{"cart.shop", "payments.shop", "users.shop", "admin.shop", "orders.shop", "stock.shop", "a.flood", "b.flood"}
	for i := 0; i < 5; i++ {
		out = append(out, "a.decoy"+strconv.Itoa(i), "b.decoy"+strconv.Itoa(i))
	}
	return out
}

// recordLine is one shipped record; ts is what the sender claims.
func recordLine(ts time.Time, src, dst string, status int) string {
	return `{"ts_ns":` + itoa(ts.UnixNano()) + `,"route":"/items/{num}","score":0.9,"flagged":true,"request":{"Method":"GET","Path":"/items/7","Source":"` + src +
		`","Destination":"` + dst + `","Status":` + itoa(int64(status)) + `}}` + "\n"
}

// learnWeb ships web's ordinary traffic to cart and trains the model
// every test detects on.
func learnWeb(t *testing.T, s *Server) {
	t.Helper()
	var b strings.Builder
	now := time.Now()
	for i := 0; i < 400; i++ {
		b.WriteString(strings.Replace(recordLine(now.Add(time.Duration(i-400)*time.Millisecond), webP, "cart.shop", 200), `"score":0.9,"flagged":true`, `"score":0.1`, 1))
	}
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	if _, err := s.Train(context.Background()); err != nil {
		t.Fatal(err)
	}
}

const webP = "spiffe://cluster.local/ns/shop/sa/web"

// owned lists meshward's policies: namespace/name → principal.
func (k *kubeServe) owned(t *testing.T) map[string]string {
	t.Helper()
	l, err := k.ic.SecurityV1().AuthorizationPolicies("").List(context.Background(), metav1.ListOptions{LabelSelector: policy.OwnedSelector})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, ap := range l.Items {
		out[ap.Namespace+"/"+ap.Name] = ap.Annotations[policy.AnnotationPrincipal]
	}
	return out
}

func (k *kubeServe) countFor(t *testing.T, principal string) int {
	n := 0
	for _, p := range k.owned(t) {
		if p == principal {
			n++
		}
	}
	return n
}

// poll waits for cond, up to within.
func poll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

func leaderOf(t *testing.T, servers ...*Server) *Server {
	t.Helper()
	var l *Server
	poll(t, 30*time.Second, "a leader", func() bool {
		for _, s := range servers {
			if s.elector.Leading() {
				l = s
				return true
			}
		}
		return false
	})
	return l
}

// TestDecoysDoNotSuppressTheRealFanOutKube is the decoy probe, on a real
// redis-server and kube-apiserver: five forged principals in five
// namespaces, their records dated ahead (as far as the collector's skew
// window lets a sender claim: records dated 2099 are refused there), fan
// out first and use up the overall decision rate. Their quarantines expire
// one TTL from now on the control plane's clock, not from the claimed
// time; the real fan-out that follows is
// held only until the rate period frees and is then quarantined; decoys
// in one namespace never hold up another's.
func TestDecoysDoNotSuppressTheRealFanOutKube(t *testing.T) {
	namespaces := []string{"shop", "decoy0", "decoy1", "decoy2", "decoy3", "decoy4", "flood"}
	k := newKubeServe(t, namespaces...)
	s := k.replica(t, func(c *Config) { c.Rules.RatePeriod = 3 * time.Second })
	learnWeb(t, s)
	leaderOf(t, s)
	ahead := time.Now().Add(4 * time.Minute)
	var b strings.Builder
	for i := 0; i < 5; i++ {
		p := "spiffe://cluster.local/ns/decoy" + strconv.Itoa(i) + "/sa/d"
		for _, d := range []string{"a", "b"} {
			b.WriteString(recordLine(ahead, p, d+".decoy"+strconv.Itoa(i), 403))
		}
	}
	start := time.Now()
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping the decoys: %d", code)
	}
	poll(t, 20*time.Second, "the decoys' quarantines", func() bool { return len(k.owned(t)) == 10 })
	l, err := k.ic.SecurityV1().AuthorizationPolicies("").List(context.Background(), metav1.ListOptions{LabelSelector: policy.OwnedSelector})
	if err != nil {
		t.Fatal(err)
	}
	for _, ap := range l.Items {
		exp, err := time.Parse(policy.TimeFormat, ap.Annotations[policy.AnnotationExpires])
		if err != nil || exp.After(time.Now().Add(decide.DefaultRules().TTL+time.Minute)) || exp.Before(start.Add(decide.DefaultRules().TTL-time.Minute)) {
			t.Errorf("%s expires %s (%v): not one TTL from now", ap.Name, ap.Annotations[policy.AnnotationExpires], err)
		}
	}
	// The real fan-out, its records dated ahead too.
	b.Reset()
	for _, d := range []string{"payments", "users", "admin"} {
		b.WriteString(recordLine(ahead, webP, d+".shop", 403))
	}
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping the fan-out: %d", code)
	}
	poll(t, 20*time.Second, "the real fan-out quarantined", func() bool { return k.countFor(t, webP) == 3 })
	t.Logf("the real fan-out was quarantined %v after the decoys", time.Since(start))

	// Decoys flooding one namespace do not hold up another's intruder.
	b.Reset()
	for i := 0; i < 8; i++ {
		for _, d := range []string{"a", "b"} {
			b.WriteString(recordLine(time.Now(), "spiffe://cluster.local/ns/flood/sa/f"+strconv.Itoa(i), d+".flood", 403))
		}
	}
	api := "spiffe://cluster.local/ns/shop/sa/api"
	for _, d := range []string{"orders", "stock"} {
		b.WriteString(recordLine(time.Now(), api, d+".shop", 403))
	}
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	poll(t, 20*time.Second, "the second intruder quarantined", func() bool { return k.countFor(t, api) == 2 })
	if n := len(k.owned(t)) - 10 - 3 - 2; n > 2*decide.DefaultRules().MaxActivePerNamespace {
		t.Errorf("%d policies for the flood, over its namespace's cap", n)
	}
}

// TestFailoverKube: the leader quarantines two principals, an operator
// releases one, and the leader goes away. The replica that takes over
// rebuilds from the API server before it acts and replays the stream's
// last horizon without quarantining the released principal again on the
// evidence already weighed; it lists the other, releases it on request,
// and expires what it quarantines itself.
func TestFailoverKube(t *testing.T) {
	k := newKubeServe(t, "shop")
	ttl := func(c *Config) { c.Rules.TTL = 15 * time.Second }
	a := k.replica(t, ttl)
	b := k.replica(t, ttl)
	first := leaderOf(t, a, b)
	other := b
	if first == b {
		other = a
	}
	learnWeb(t, first)
	api := "spiffe://cluster.local/ns/shop/sa/api"
	var batch strings.Builder
	for _, d := range []string{"payments", "users", "admin"} {
		batch.WriteString(recordLine(time.Now(), webP, d+".shop", 403))
	}
	for _, d := range []string{"orders", "stock"} {
		batch.WriteString(recordLine(time.Now(), api, d+".shop", 403))
	}
	if code := ship(t, other, batch.String()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	poll(t, 20*time.Second, "both quarantines applied by the first leader", func() bool {
		return k.countFor(t, webP) == 3 && k.countFor(t, api) == 2
	})
	release := func(s *Server, principal string) {
		t.Helper()
		var list struct {
			Quarantines []struct{ ID, Principal string }
		}
		id := ""
		poll(t, 20*time.Second, "the leader to list "+principal, func() bool {
			_, body := get(t, s.AdminURL+"/api/v1/quarantines")
			if json.Unmarshal([]byte(body), &list) != nil {
				return false
			}
			for _, q := range list.Quarantines {
				if q.Principal == principal {
					id = q.ID
				}
			}
			return id != ""
		})
		resp, err := adminPost(s.AdminURL + "/api/v1/quarantines/" + id + "/release")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || k.countFor(t, principal) != 0 {
			t.Fatalf("release of %s: %d, %d policies left", principal, resp.StatusCode, k.countFor(t, principal))
		}
	}
	release(first, webP)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, "the other replica to lead", other.elector.Leading)
	// A fan-out after the takeover: once it is quarantined, the new
	// leader has replayed the horizon before it (the stream is read in
	// order), the released principal's records included.
	cart := "spiffe://cluster.local/ns/shop/sa/cart"
	batch.Reset()
	for _, d := range []string{"orders", "stock"} {
		batch.WriteString(recordLine(time.Now(), cart, d+".shop", 403))
	}
	if code := ship(t, other, batch.String()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	poll(t, 20*time.Second, "the new leader to quarantine a new fan-out", func() bool { return k.countFor(t, cart) == 2 })
	if n := k.countFor(t, webP); n != 0 {
		t.Fatalf("the new leader quarantined the released principal again (%d policies) on the evidence already weighed", n)
	}
	release(other, api)
	poll(t, 40*time.Second, "the new leader's quarantine to expire", func() bool { return k.countFor(t, cart) == 0 })
}

// TestStaleLeaderCannotApplyKube: a leader whose Lease another holder took
// (it has not noticed yet) cannot write: the fence asks the API server.
func TestStaleLeaderCannotApplyKube(t *testing.T) {
	k := newKubeServe(t, "shop")
	s := k.replica(t, nil)
	leaderOf(t, s)
	leases := k.env.Clientset.CoordinationV1().Leases(k.lease)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := leases.Get(context.Background(), s.cfg.LeaseName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		intruder, secs := "intruder", int32(3600)
		now := metav1.NewMicroTime(time.Now())
		l.Spec = coordinationv1.LeaseSpec{HolderIdentity: &intruder, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now}
		_, err = leases.Update(context.Background(), l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	d := decide.Decision{ID: "web-1", Principal: webP, TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web",
		Deny: []decide.Target{{Workload: "payments.shop", Name: "payments", Namespace: "shop"}}, Mode: decide.DryRun,
		Created: time.Now(), Expires: time.Now().Add(time.Hour)}
	if err := s.cfg.Quarantine.Apply(context.Background(), d); !errors.Is(err, leader.ErrNotLeader) {
		t.Errorf("a stale leader's write: %v, want ErrNotLeader", err)
	}
	if got := k.owned(t); len(got) != 0 {
		t.Errorf("a stale leader wrote %v", got)
	}
}

// refusing is a sink that refuses its first writes, then writes YAML.
type refusing struct {
	*enforce.Dir
	left atomic.Int32
}

func (r *refusing) Apply(ctx context.Context, d decide.Decision) error {
	if d.Suppressed == "" && r.left.Add(-1) >= 0 {
		return errors.New("refused: the sink is not ready")
	}
	return r.Dir.Apply(ctx, d)
}

// TestPendingQuarantineIsListed: a decision whose first write is refused
// is listed by /api/v1/quarantines with "pending": the error, counted in
// the failures metric, and lands on a retry.
func TestPendingQuarantineIsListed(t *testing.T) {
	dir, err := enforce.NewDir(t.TempDir(), decide.DefaultRules(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sink := &refusing{Dir: dir}
	sink.left.Store(1)
	s := startWith(t, redistest.Start(t).Addr, func(c *Config) {
		c.Quarantine, c.TickEvery = sink, 50*time.Millisecond
	})
	learnWeb(t, s)
	leaderOf(t, s)
	var b strings.Builder
	for _, d := range []string{"payments", "users"} {
		b.WriteString(recordLine(time.Now(), webP, d+".shop", 403))
	}
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	type listed struct {
		Quarantines []struct{ ID, Principal, Pending string }
	}
	var l listed
	poll(t, 20*time.Second, "the refused decision listed as pending", func() bool {
		_, body := get(t, s.AdminURL+"/api/v1/quarantines")
		l = listed{}
		return json.Unmarshal([]byte(body), &l) == nil && len(l.Quarantines) == 1 && strings.Contains(l.Quarantines[0].Pending, "refused")
	})
	if scrape(t, s, MetricQuarantineWriteFailures) < 1 {
		t.Error("the refused write is not counted")
	}
	poll(t, 20*time.Second, "the retry to land", func() bool {
		_, body := get(t, s.AdminURL+"/api/v1/quarantines")
		l = listed{}
		return json.Unmarshal([]byte(body), &l) == nil && len(l.Quarantines) == 1 && l.Quarantines[0].Pending == "" && sink.Active() == 1
	})
}
