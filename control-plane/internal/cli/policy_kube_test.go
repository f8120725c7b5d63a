package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshward/meshward/models"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/control-plane/policy"
	"github.com/meshward/meshward/internal/kubetest"
)

// TestPolicyCommandsKube: run --kubeconfig applies the quarantine to a real
// API server (not YAML); policy list, show, export and release work on it;
// kubectl accepts the exported YAML (server-side dry run).
func TestPolicyCommandsKube(t *testing.T) {
	env := kubetest.Start(t)
	ctx := context.Background()
	if _, err := env.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := lateralTraffic(t, dir)
	outDir := filepath.Join(dir, "out")
	var out, errOut bytes.Buffer
	if err := Main([]string{"run", "--traffic", data, "--learn-until", "2026-11-25T10:00:50Z", "--runner", "native", "--out", outDir, "--kubeconfig", env.Kubeconfig}, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	if _, err := os.Stat(filepath.Join(outDir, "policies")); !os.IsNotExist(err) {
		t.Error("run --kubeconfig wrote YAML as well")
	}
	l, err := ic.SecurityV1().AuthorizationPolicies("shop").List(ctx, metav1.ListOptions{LabelSelector: policy.OwnedSelector})
	if err != nil || len(l.Items) != 3 {
		t.Fatalf("run --kubeconfig: %v, %d policies in the API server, want 3", err, len(l.Items))
	}
	if !strings.Contains(errOut.String(), `"action":"quarantine"`) {
		t.Errorf("no audit line on stderr:\n%s", errOut.String())
	}
	id := l.Items[0].Labels[policy.LabelDecision]
	kc := []string{"--kubeconfig", env.Kubeconfig}
	out.Reset()
	if err := Main(append([]string{"policy", "list"}, kc...), &out, &errOut); err != nil || !strings.Contains(out.String(), id) || !strings.Contains(out.String(), "admin.shop") {
		t.Fatalf("policy list: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := Main(append([]string{"policy", "show", id}, kc...), &out, &errOut); err != nil || strings.Count(out.String(), `"namespace": "shop"`) < 3 {
		t.Fatalf("policy show: %v\n%s", err, out.String())
	}
	exp := filepath.Join(dir, "export")
	if err := Main(append([]string{"policy", "export", "--out", exp}, kc...), &bytes.Buffer{}, &errOut); err != nil {
		t.Fatal(err)
	}
	if msg, err := env.RunKubectl(ctx, "apply", "--dry-run=server", "-f", filepath.Join(exp, id+".yaml")); err != nil {
		t.Errorf("kubectl refuses the exported YAML: %v", err)
	} else if !strings.Contains(msg, "unchanged") && !strings.Contains(msg, "configured") {
		t.Errorf("kubectl: %s", msg)
	}
	if err := Main(append([]string{"policy", "release", id}, kc...), &bytes.Buffer{}, &errOut); err != nil {
		t.Fatal(err)
	}
	if l, _ := ic.SecurityV1().AuthorizationPolicies("shop").List(ctx, metav1.ListOptions{LabelSelector: policy.OwnedSelector}); len(l.Items) != 0 {
		t.Errorf("after release: %d policies", len(l.Items))
	}
	if err := Main(append([]string{"policy", "release", id}, kc...), &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("releasing twice succeeded")
	}
	// On the same API server (one start saved): meshward secret.
	t.Run("secret", func(t *testing.T) { testSecretCommand(t, env) })
}

// testSecretCommand: meshward secret creates the Redis password Secret
// with a random value, and a second run keeps it.
func testSecretCommand(t *testing.T, env *kubetest.Env) {
	args := []string{"secret", "--kubeconfig", env.Kubeconfig, "-namespace", "shop", "-name", "meshward-redis"}
	var out bytes.Buffer
	if err := Main(args, &out, &bytes.Buffer{}); err != nil || !strings.Contains(out.String(), "created") {
		t.Fatalf("first run: %v %s", err, out.String())
	}
	s, err := env.Clientset.CoreV1().Secrets("shop").Get(context.Background(), "meshward-redis", metav1.GetOptions{})
	if err != nil || len(s.Data["password"]) != 43 {
		t.Fatalf("the Secret: %v, a password of %d characters (want 43: 32 random bytes)", err, len(s.Data["password"]))
	}
	first := string(s.Data["password"])
	out.Reset()
	if err := Main(args, &out, &bytes.Buffer{}); err != nil || !strings.Contains(out.String(), "kept") {
		t.Fatalf("second run: %v %s", err, out.String())
	}
	s, err = env.Clientset.CoreV1().Secrets("shop").Get(context.Background(), "meshward-redis", metav1.GetOptions{})
	if err != nil || string(s.Data["password"]) != first {
		t.Errorf("the second run changed the password (%v)", err)
	}
	if err := Main([]string{"secret", "--kubeconfig", env.Kubeconfig, "-bytes", "8"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("an 8-byte secret was accepted")
	}
	if err := Main([]string{"secret", "--kubeconfig", env.Kubeconfig, "-format", "base32"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "-format") {
		t.Errorf("an unknown format: %v", err)
	}

	// The value key, as the manifests' Job creates it: one serve takes.
	vk := []string{"secret", "--kubeconfig", env.Kubeconfig, "-namespace", "shop", "-name", "meshward-value-key", "-key", "key", "-bytes", "16", "-format", "hex"}
	if err := Main(vk, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	s, err = env.Clientset.CoreV1().Secrets("shop").Get(context.Background(), "meshward-value-key", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := models.ParseValueKey(string(s.Data["key"])); err != nil {
		t.Errorf("the value key Secret %q: %v", s.Data["key"], err)
	}
}
