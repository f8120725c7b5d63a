package enforce_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/detect"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/control-plane/quarantine"
	"github.com/meshward/meshward/internal/kubetest"
	"github.com/meshward/meshward/models"
)

const web = "spiffe://cluster.local/ns/shop/sa/web"

// webModel learns web calling cart only.
func webModel(t *testing.T) *models.Model {
	t.Helper()
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(0, 0)
	tr, _ := models.NewTrainer(cfg)
	for i := 0; i < 400; i++ {
		tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/items/%d", i), Source: web, Destination: "cart.shop", Status: 200})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func call(at time.Time, src, dst string, status int) detect.Observation {
	return detect.Observation{TS: at, Score: 0.9, Flagged: true, Request: &models.Request{Method: "GET", Path: "/admin", Source: src, Destination: dst, Status: status}}
}

// The package's tests share one kube-apiserver (starting one costs about
// 6 s of a busy machine's two cores); namespaces keeps them apart.
func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

// namespaces makes the namespaces a test's identities name, unless an
// earlier test on the shared server did (without a namespace controller a
// namespace is never deleted), and empties them of AuthorizationPolicies
// when the test ends, so the next test lists only its own.
func namespaces(t *testing.T, env *kubetest.Env, names ...string) {
	t.Helper()
	ctx := context.Background()
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	env.EnsureNamespaces(t, names...)
	for _, ns := range names {
		t.Cleanup(func() {
			if err := ic.SecurityV1().AuthorizationPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
				t.Errorf("emptying %s: %v", ns, err)
			}
		})
	}
}

func policiesIn(t *testing.T, ic istioclient.Interface, ns string) []string {
	t.Helper()
	l, err := ic.SecurityV1().AuthorizationPolicies(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ap := range l.Items {
		out = append(out, ap.Labels["meshward.io/target"])
	}
	return out
}

// TestRefusedWriteIsRetriedKube: the real API server refuses meshward's
// first write (RBAC: its Role is not bound yet, 403). The decision is not
// used up: it is surfaced (pending with the error, an Event, the failure
// count), retried with backoff, and the quarantine lands once the Role is
// bound.
func TestRefusedWriteIsRetriedKube(t *testing.T) {
	env := kubetest.Shared(t)
	namespaces(t, env, "shop")
	ctx := context.Background()
	admin := env.Clientset
	t.Cleanup(func() { // the shared server: the next test's "meshward" has no rights
		_ = admin.RbacV1().ClusterRoleBindings().Delete(ctx, "meshward-events", metav1.DeleteOptions{})
		_ = admin.RbacV1().ClusterRoles().Delete(ctx, "meshward-events", metav1.DeleteOptions{})
		_ = admin.RbacV1().RoleBindings("shop").Delete(ctx, "meshward", metav1.DeleteOptions{})
		_ = admin.RbacV1().Roles("shop").Delete(ctx, "meshward", metav1.DeleteOptions{})
	})
	// meshward may write Events from the start, not AuthorizationPolicies.
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "meshward-events"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "meshward-events"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "meshward-events"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "meshward"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	as := rest.CopyConfig(env.Config)
	as.Impersonate = rest.ImpersonationConfig{UserName: "meshward"}
	ic, err := istioclient.NewForConfig(as)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(as)
	if err != nil {
		t.Fatal(err)
	}
	app, err := quarantine.New(quarantine.Config{Rules: decide.DefaultRules()}, ic, kc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	loop, err := enforce.New(detect.DefaultConfig(), decide.DefaultRules(), webModel(t), app, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	_, _ = loop.Observe(ctx, call(t0, web, "payments.shop", 403))
	d, err := loop.Observe(ctx, call(t0.Add(100*time.Millisecond), web, "users.shop", 403))
	if d == nil || err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("the first write: decision %+v, err %v; want it refused (403)", d, err)
	}
	pending := loop.Pending()
	if len(pending) != 1 || pending[0].Principal != web || !strings.Contains(pending[0].Pending, "forbidden") {
		t.Fatalf("pending %+v, want the refused decision with its error", pending)
	}
	evs, err := admin.CoreV1().Events("shop").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, ev := range evs.Items {
		if ev.Reason == "QuarantineFailed" && strings.Contains(ev.Message, "forbidden") {
			failed++
		}
	}
	if failed == 0 {
		t.Errorf("no QuarantineFailed Event in shop: %d events", len(evs.Items))
	}
	// Not due yet (backoff): nothing is written.
	if err := loop.Tick(ctx, t0.Add(500*time.Millisecond)); err != nil {
		t.Fatalf("tick before the retry is due: %v", err)
	}
	// The Role is bound; the retry after the backoff lands.
	if _, err := admin.RbacV1().Roles("shop").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "meshward"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"security.istio.io"}, Resources: []string{"authorizationpolicies"},
			Verbs: []string{"get", "list", "create", "update", "patch", "delete"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings("shop").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "meshward"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "meshward"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "meshward"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// RBAC takes effect once the API server's authorizer sees the binding:
	// retry on the simulated clock until it does (bounded).
	at := t0.Add(2 * time.Second)
	for i := 0; len(loop.Pending()) > 0; i++ {
		if i == 20 {
			t.Fatalf("still pending after %d retries: %+v", i, loop.Pending())
		}
		_ = loop.Tick(ctx, at)
		at = at.Add(time.Minute)
	}
	if got := policiesIn(t, ic, "shop"); len(got) != 2 {
		t.Fatalf("after the retry, policies for %v, want payments and users", got)
	}
	if loop.Failures() < 1 || app.Active() != 1 {
		t.Errorf("failures %d, standing %d", loop.Failures(), app.Active())
	}
	// The fan-out goes on: the new destination joins the quarantine.
	if _, err := loop.Observe(ctx, call(at, web, "admin.shop", 403)); err != nil {
		t.Fatal(err)
	}
	if got := policiesIn(t, ic, "shop"); len(got) != 3 {
		t.Errorf("policies for %v, want the third destination joined", got)
	}
}

// TestOutOfNamespaceTargetKube: meshward writes in shop only. The
// attacker's first new destinations are elsewhere: they are left out
// (listed as skipped), the incident is not used up, and the in-namespace
// destinations it reaches next are fenced.
func TestOutOfNamespaceTargetKube(t *testing.T) {
	env := kubetest.Shared(t)
	namespaces(t, env, "shop", "other")
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	app, err := quarantine.New(quarantine.Config{Rules: decide.DefaultRules(), Namespaces: []string{"shop"}}, ic, env.Clientset, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	loop, err := enforce.New(detect.DefaultConfig(), decide.DefaultRules(), webModel(t), app, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for i, dst := range []string{"db.other", "vault.other", "payments.shop", "users.shop"} {
		if _, err := loop.Observe(ctx, call(t0.Add(time.Duration(i)*200*time.Millisecond), web, dst, 403)); err != nil {
			t.Fatalf("%s: %v", dst, err)
		}
		if err := loop.Tick(ctx, t0.Add(time.Duration(i)*200*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if got := policiesIn(t, ic, "shop"); len(got) != 2 {
		t.Fatalf("policies in shop for %v, want payments and users", got)
	}
	if got := policiesIn(t, ic, "other"); len(got) != 0 {
		t.Errorf("policies written outside the namespaces granted: %v", got)
	}
	ds := loop.Decisions()
	if len(ds) != 1 || len(ds[0].Skipped) != 2 || !strings.Contains(strings.Join(ds[0].Skipped, " "), "does not write in namespace other") {
		t.Errorf("decisions %+v, want one, listing the other namespace's targets as skipped", ds)
	}
}
