package kubetest_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/meshward/meshward/internal/kubetest"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestAuthorizationPolicyRoundTrip: a security.istio.io/v1 AuthorizationPolicy
// written with Istio's typed clientset under strict field validation comes
// back as written; the CRD's CEL rules and unknown fields are enforced by the
// server, which says what is wrong.
func TestAuthorizationPolicyRoundTrip(t *testing.T) {
	env := kubetest.Shared(t)
	t.Logf("kube-apiserver %s + etcd %s started in %v", kubetest.KubeVersion, kubetest.EtcdVersion, env.StartTime)
	ns := env.Namespace(t, "ap")
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	strict := metav1.CreateOptions{FieldValidation: "Strict"}
	ap := &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "fence-web", Namespace: ns, Labels: map[string]string{"app.kubernetes.io/managed-by": "meshward"}},
		Spec: securityv1beta1.AuthorizationPolicy{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "web"}},
			Action:   securityv1beta1.AuthorizationPolicy_DENY,
			Rules: []*securityv1beta1.Rule{{
				From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Principals: []string{"cluster.local/ns/shop/sa/cart"}}}},
			}},
		},
	}
	if _, err := ic.SecurityV1().AuthorizationPolicies(ns).Create(ctx(t), ap, strict); err != nil {
		t.Fatalf("creating a valid AuthorizationPolicy: %v", err)
	}
	got, err := ic.SecurityV1().AuthorizationPolicies(ns).Get(ctx(t), "fence-web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Action != securityv1beta1.AuthorizationPolicy_DENY ||
		len(got.Spec.Rules) != 1 || got.Spec.Rules[0].From[0].Source.Principals[0] != "cluster.local/ns/shop/sa/cart" ||
		got.Spec.Selector.MatchLabels["app"] != "web" {
		t.Errorf("read back a different policy: %v", &got.Spec)
	}

	// A CEL rule of the real CRD: no wildcard in a selector's label value.
	bad := ap.DeepCopy()
	bad.Name = "wildcard"
	bad.Spec.Selector.MatchLabels["app"] = "web*"
	_, err = ic.SecurityV1().AuthorizationPolicies(ns).Create(ctx(t), bad, strict)
	if err == nil || !strings.Contains(err.Error(), "wildcard not allowed in label value match") {
		t.Errorf("a wildcard label value: got %v, want the CRD's CEL message", err)
	}

	// An unknown field (the typed client cannot send one, so go through the
	// dynamic client): strict validation rejects it and names it.
	dc, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	gvr := schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "unknown-field", "namespace": ns},
		"spec":     map[string]any{"action": "DENY", "principal": "cluster.local/ns/shop/sa/cart"},
	}}
	_, err = dc.Resource(gvr).Namespace(ns).Create(ctx(t), u, strict)
	if err == nil || !strings.Contains(err.Error(), `unknown field "spec.principal"`) {
		t.Errorf("an unknown field: got %v, want strict decoding to name spec.principal", err)
	}
	// An action outside the CRD's enum.
	u.Object["spec"] = map[string]any{"action": "BLOCK"}
	u.SetName("bad-action")
	_, err = dc.Resource(gvr).Namespace(ns).Create(ctx(t), u, strict)
	if err == nil || !strings.Contains(err.Error(), "spec.action") {
		t.Errorf("action BLOCK: got %v, want a schema error on spec.action", err)
	}
}

const manifest = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-cart
spec:
  selector:
    matchLabels:
      app: payments
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/shop/sa/cart"]
---
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata:
  name: meshward
spec:
  selector:
    matchLabels:
      app: meshward
  podMetricsEndpoints:
  - port: admin
    path: /metrics
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: meshward
data:
  mode: dry-run
`

// TestKubectlServerDryRun: kubectl (built with the server) applies a
// kustomization with server-side dry-run and strict validation through the
// kubeconfig; Istio and Prometheus Operator kinds are known to the server,
// nothing is persisted, and an unknown field is refused with its name.
func TestKubectlServerDryRun(t *testing.T) {
	env := kubetest.Shared(t)
	ns := env.Namespace(t, "dryrun")
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kustomization.yaml", "namespace: "+ns+"\nresources:\n- policy.yaml\n")
	write("policy.yaml", manifest)
	out, err := env.RunKubectl(ctx(t), "apply", "--dry-run=server", "--validate=strict", "-k", dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"authorizationpolicy.security.istio.io/deny-cart created (server dry run)",
		"podmonitor.monitoring.coreos.com/meshward created (server dry run)",
		"configmap/meshward created (server dry run)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl output lacks %q:\n%s", want, out)
		}
	}
	if _, err := env.Clientset.CoreV1().ConfigMaps(ns).Get(ctx(t), "meshward", metav1.GetOptions{}); err == nil {
		t.Error("a server dry run persisted the ConfigMap")
	}

	write("policy.yaml", strings.Replace(manifest, "  action: DENY", "  action: DENY\n  principal: nobody", 1))
	out, err = env.RunKubectl(ctx(t), "apply", "--dry-run=server", "--validate=strict", "-k", dir)
	if err == nil || !strings.Contains(out, `unknown field "spec.principal"`) {
		t.Errorf("an unknown field: err %v, output:\n%s", err, out)
	}
}
