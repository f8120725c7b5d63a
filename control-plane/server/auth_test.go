package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/internal/kubetest"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// auditLines returns the audit lines logged so far.
func (l *lockedBuffer) auditLines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["audit"] == true {
			out = append(out, m)
		}
	}
	return out
}

// TestAdminAPIAuthOnARealAPIServer: the admin API authenticates callers
// with TokenReview and authorizes them with SubjectAccessReview against the
// shipped ClusterRoles, on a real kube-apiserver. A quarantined principal
// cannot release its quarantine (or make any other change) even with the
// operator's rights (403, audited), a principal without the verb cannot
// either, an operator can; nothing changes before the operator's call.
// /metrics wants a token allowed get on /metrics; the probes stay open.
func TestAdminAPIAuthOnARealAPIServer(t *testing.T) {
	env := kubetest.Start(t)
	ctx := context.Background()
	if out, err := env.RunKubectl(ctx, "apply", "-f", filepath.Join("..", "..", "manifests", "istio", "controlplane", "rbac-api.yaml")); err != nil {
		t.Fatalf("applying the shipped ClusterRoles: %v\n%s", err, out)
	}
	ns := env.Namespace(t, "auth")
	kc := env.Clientset
	token := func(sa string, roles ...string) string {
		t.Helper()
		if _, err := kc.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, role := range roles {
			_, err := kc.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + sa + "-" + role},
				RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
		}
		exp := int64(3600)
		tr, err := kc.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	operator := token("operator", "meshward-operator", "meshward-metrics-reader")
	viewer := token("viewer", "meshward-viewer")
	nobody := token("nobody")
	web := token("web", "meshward-operator") // every right, and quarantined

	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	sink, err := enforce.NewDir(t.TempDir(), decide.DefaultRules(), log)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	quarantine := func(id, sa string) {
		d := decide.Decision{ID: id, Principal: fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, sa), TrustDomain: "cluster.local",
			Namespace: ns, ServiceAccount: sa, Deny: []decide.Target{{Workload: "cart." + ns, Name: "cart", Namespace: ns}},
			Mode: decide.DryRun, Created: now, Expires: now.Add(time.Hour), Reason: "test"}
		if err := sink.Apply(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	quarantine("web-1", "web")
	quarantine("intruder-1", "intruder")

	cfg := testConfig()
	cfg.Kube, cfg.Auth.Token, cfg.Quarantine = env.Config, nil, sink
	s, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	call := func(method, tok, path string) int {
		t.Helper()
		req, _ := http.NewRequest(method, s.AdminURL+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	release := func(id string) string { return "/api/v1/quarantines/" + id + "/release" }
	for _, c := range []struct {
		name, method, tok, path string
		want                    int
	}{
		{"no token", "POST", "", release("web-1"), 401},
		{"a token the API server does not know", "POST", "not-a-real-token", release("web-1"), 401},
		{"a principal without the verb", "POST", nobody, release("web-1"), 403},
		{"a viewer", "POST", viewer, release("web-1"), 403},
		{"the quarantined principal, its own quarantine", "POST", web, release("web-1"), 403},
		{"the quarantined principal, another's quarantine", "POST", web, release("intruder-1"), 403},
		{"the quarantined principal, retraining", "POST", web, "/api/v1/train", 403},
		{"the quarantined principal, rolling back", "POST", web, "/api/v1/rollback", 403},
		{"the quarantined principal, an exception for itself", "POST", web, "/api/v1/exceptions", 403},
		{"the quarantined principal, revoking an exception", "DELETE", web, "/api/v1/exceptions/any", 403},
		{"an exception without a token", "POST", "", "/api/v1/exceptions", 401},
		{"a viewer adds no exception", "POST", viewer, "/api/v1/exceptions", 403},
		{"a viewer lists the exceptions", "GET", viewer, "/api/v1/exceptions", 200},
		{"a viewer reads the workloads", "GET", viewer, "/api/v1/workloads", 200},
		{"reads need a token", "GET", "", "/api/v1/quarantines", 401},
		{"reads need the verb", "GET", nobody, "/api/v1/models/current", 403},
		{"a viewer reads", "GET", viewer, "/api/v1/quarantines", 200},
		{"the quarantined principal still reads", "GET", web, "/api/v1/quarantines", 200},
		{"metrics need a token", "GET", "", "/metrics", 401},
		{"metrics need get on /metrics", "GET", viewer, "/metrics", 403},
		{"a scraper allowed /metrics", "GET", operator, "/metrics", 200},
		{"healthz is open", "GET", "", "/healthz", 200},
		{"readyz is open", "GET", "", "/readyz", 200},
	} {
		if got := call(c.method, c.tok, c.path); got != c.want {
			t.Errorf("%s: %s %s = %d, want %d", c.name, c.method, c.path, got, c.want)
		}
	}
	if !sink.Holds("web-1") || !sink.Holds("intruder-1") {
		t.Fatal("a refused call released a quarantine")
	}
	// The refusal of the quarantined principal is an audit line naming it
	// and why.
	found := false
	for _, l := range logs.auditLines(t) {
		if l["identity"] == "spiffe://cluster.local/ns/"+ns+"/sa/web" && l["allowed"] == false && l["status"] == float64(403) &&
			strings.Contains(fmt.Sprint(l["reason"]), "under quarantine web-1") && l["action"] == "create quarantines/release web-1" {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit line for the quarantined principal's refusal:\n%v", logs.auditLines(t))
	}
	// An operator releases it.
	if got := call("POST", operator, release("web-1")); got != 200 {
		t.Fatalf("the operator's release: %d", got)
	}
	if sink.Holds("web-1") || !sink.Holds("intruder-1") {
		t.Error("the operator's release did not release web-1 alone")
	}
	found = false
	for _, l := range logs.auditLines(t) {
		if l["user"] == "system:serviceaccount:"+ns+":operator" && l["allowed"] == true && l["status"] == float64(200) && l["action"] == "create quarantines/release web-1" {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit line for the operator's release:\n%v", logs.auditLines(t))
	}

	// An operator's exception is stored, and is a Kubernetes Event.
	if err := s.store.Ingest(ctx, []record.Record{{TS: now, Route: "/", Request: models.Request{Method: "GET", Path: "/", Source: "spiffe://cluster.local/ns/" + ns + "/sa/web", Destination: "cart." + ns}}}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", s.AdminURL+"/api/v1/exceptions", strings.NewReader(`{"id":"orders-ok","workload":"cart.`+ns+`","caller":"spiffe://cluster.local/ns/`+ns+`/sa/orders","reason":"release","ttl":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+operator)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || !strings.Contains(string(b), `"author":"system:serviceaccount:`+ns+`:operator"`) {
		t.Fatalf("the operator's exception: %d %s", resp.StatusCode, b)
	}
	evs, err := kc.EventsV1().Events(cfg.LeaseNamespace).List(ctx, metav1.ListOptions{LabelSelector: "meshward.io/exception=orders-ok"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 1 || evs.Items[0].Reason != "ExceptionAdded" || evs.Items[0].Regarding.Name != ns {
		t.Errorf("the exception's Events: %+v", evs.Items)
	}
}
