package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/control-plane/policy"
	"github.com/meshward/meshward/control-plane/quarantine"
	"github.com/meshward/meshward/internal/istiofake"
	"github.com/meshward/meshward/internal/kubetest"
	"github.com/meshward/meshward/internal/redistest"
)

// TestServeQuarantines: serve learns a model from shipped records, then a
// principal shipped fanning out to destinations it never called is
// quarantined in the API server by the leading replica.
func TestServeQuarantines(t *testing.T) {
	testServeQuarantines(t, istiofake.New(), kubefake.NewClientset(), nil)
}

// TestServeQuarantinesKube: the same against a real API server, which
// also elects the leader (a Lease).
func TestServeQuarantinesKube(t *testing.T) {
	env := kubetest.Start(t)
	if _, err := env.Clientset.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	testServeQuarantines(t, ic, env.Clientset, env.Config)
}

func testServeQuarantines(t *testing.T, ic istioclient.Interface, kc kubernetes.Interface, kube *rest.Config) {
	cfg := testConfig()
	cfg.Kube = kube
	cfg.CollectorAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TickEvery = 50 * time.Millisecond
	app, err := quarantine.New(quarantine.Config{Rules: cfg.Rules}, ic, kc, slog.New(slog.NewTextHandler(io.Discard, nil)))
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

	rec := func(ts time.Time, src, dst string, status int) string {
		return `{"ts_ns":` + itoa(ts.UnixNano()) + `,"route":"/items/{num}","score":0.1,"request":{"Method":"GET","Path":"/items/7","Source":"` + src +
			`","Destination":"` + dst + `","Status":` + itoa(int64(status)) + `}}` + "\n"
	}
	web := "spiffe://cluster.local/ns/shop/sa/web"
	var b strings.Builder
	now := time.Now()
	for i := 0; i < 400; i++ {
		b.WriteString(rec(now.Add(time.Duration(i-400)*time.Millisecond), web, "cart.shop", 200))
	}
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	resp, err := adminPost(s.AdminURL + "/api/v1/train")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("train: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !s.elector.Leading() {
		if time.Now().After(deadline) {
			t.Fatal("never became leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Reset()
	for i, dst := range []string{"payments.shop", "users.shop", "admin.shop"} {
		b.WriteString(rec(time.Now().Add(time.Duration(i)*time.Millisecond), web, dst, 403))
	}
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping the fan-out: %d", code)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		l, err := ic.SecurityV1().AuthorizationPolicies("shop").List(context.Background(), metav1.ListOptions{LabelSelector: policy.OwnedSelector})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Items) == 3 {
			for _, ap := range l.Items {
				if ap.Annotations[policy.AnnotationPrincipal] != web {
					t.Errorf("policy %s for %q", ap.Name, ap.Annotations[policy.AnnotationPrincipal])
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no quarantine in the API server: %d policies", len(l.Items))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The admin API lists it and releases it.
	code, body := get(t, s.AdminURL+"/api/v1/quarantines")
	var list struct {
		Quarantines []struct{ ID, Principal string }
	}
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil || len(list.Quarantines) != 1 || list.Quarantines[0].Principal != web {
		t.Fatalf("GET /api/v1/quarantines: %d %s", code, body)
	}
	resp, err = adminPost(s.AdminURL + "/api/v1/quarantines/" + list.Quarantines[0].ID + "/release")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	l, err := ic.SecurityV1().AuthorizationPolicies("shop").List(context.Background(), metav1.ListOptions{LabelSelector: policy.OwnedSelector})
	if resp.StatusCode != 200 || err != nil || len(l.Items) != 0 {
		t.Fatalf("release: %d, %v, %d policies left", resp.StatusCode, err, len(l.Items))
	}
	resp, _ = adminPost(s.AdminURL + "/api/v1/quarantines/nope/release")
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("releasing an unknown quarantine: %d", resp.StatusCode)
	}
}

// TestQuarantineAcrossReplicas: two replicas on one real redis-server; the
// fan-out reaches the collector of the one that does not lead, and the
// leader (which reads every replica's records from the observation
// stream) quarantines it.
func TestQuarantineAcrossReplicas(t *testing.T) {
	rds := redistest.Start(t)
	ic, kc := istiofake.New(), kubefake.NewClientset()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var servers []*Server
	for i := 0; i < 2; i++ {
		cfg := testConfig()
		cfg.Redis, cfg.CollectorAddr, cfg.AdminAddr = rds.Addr, "127.0.0.1:0", "127.0.0.1:0"
		cfg.TickEvery = 50 * time.Millisecond
		app, err := quarantine.New(quarantine.Config{Rules: cfg.Rules}, ic, kc, log)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Quarantine = app
		s, err := New(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		servers = append(servers, s)
	}
	rec := func(ts time.Time, src, dst string, status int) string {
		return `{"ts_ns":` + itoa(ts.UnixNano()) + `,"route":"/items/{num}","score":0.1,"request":{"Method":"GET","Path":"/items/7","Source":"` + src +
			`","Destination":"` + dst + `","Status":` + itoa(int64(status)) + `}}` + "\n"
	}
	web := "spiffe://cluster.local/ns/shop/sa/web"
	var b strings.Builder
	now := time.Now()
	for i := 0; i < 400; i++ {
		b.WriteString(rec(now.Add(time.Duration(i-400)*time.Millisecond), web, "cart.shop", 200))
	}
	if code := ship(t, servers[0], b.String()); code != 200 {
		t.Fatalf("shipping: %d", code)
	}
	resp, err := adminPost(servers[0].AdminURL + "/api/v1/train")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(30 * time.Second)
	var leaderIdx = -1
	for leaderIdx < 0 {
		for i, s := range servers {
			if s.elector.Leading() {
				leaderIdx = i
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no replica became leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	follower := servers[1-leaderIdx]
	b.Reset()
	for i, dst := range []string{"payments.shop", "users.shop", "admin.shop"} {
		b.WriteString(rec(time.Now().Add(time.Duration(i)*time.Millisecond), web, dst, 403))
	}
	if code := ship(t, follower, b.String()); code != 200 {
		t.Fatalf("shipping the fan-out to the follower: %d", code)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		l, err := ic.SecurityV1().AuthorizationPolicies("shop").List(context.Background(), metav1.ListOptions{LabelSelector: policy.OwnedSelector})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Items) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fan-out reaching the follower was not quarantined: %d policies", len(l.Items))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if follower.cfg.Quarantine.Active() != 0 {
		t.Error("the follower applied a quarantine")
	}
}
