package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: "t"}
contexts:
- name: with-ns
  context: {cluster: c, user: u, namespace: mesh}
- name: no-ns
  context: {cluster: c, user: u}
current-context: with-ns
`

func TestFind(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	t.Setenv("KUBECONFIG", "")
	if tg, err := Find("", false); tg != nil || err != nil {
		t.Fatalf("outside a cluster without a kubeconfig: %v, %v; want none", tg, err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "config")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	tg, err := Find(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Config.Host != "https://127.0.0.1:6443" || tg.Namespace != "mesh" || tg.Source != path {
		t.Errorf("got host %s namespace %s source %s", tg.Config.Host, tg.Namespace, tg.Source)
	}
	// A context without a namespace: "default".
	noNS := strings.Replace(kubeconfig, "current-context: with-ns", "current-context: no-ns", 1)
	noNSPath := filepath.Join(dir, "no-ns")
	if err := os.WriteFile(noNSPath, []byte(noNS), 0o600); err != nil {
		t.Fatal(err)
	}
	if tg, err := Find(noNSPath, false); err != nil || tg.Namespace != "default" {
		t.Errorf("context without namespace: %v, %v", tg, err)
	}
	missing := filepath.Join(dir, "nope")
	if _, err := Find(missing, false); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing kubeconfig: %v, want an error naming it", err)
	}
}

// TestFindKUBECONFIG: $KUBECONFIG is read by every caller (serve too), after
// an explicit path; naming no file that exists is an error, not a silent
// fall-back to the service account.
func TestFindKUBECONFIG(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	dir := t.TempDir()
	path := filepath.Join(dir, "config")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other")
	otherCfg := strings.Replace(kubeconfig, "127.0.0.1:6443", "127.0.0.2:6443", 1)
	if err := os.WriteFile(other, []byte(otherCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nope")
	t.Setenv("KUBECONFIG", missing+string(filepath.ListSeparator)+path)
	for _, home := range []bool{false, true} {
		tg, err := Find("", home)
		if err != nil || tg == nil {
			t.Fatalf("home=%v: %v, %v; want the $KUBECONFIG file", home, tg, err)
		}
		if tg.Config.Host != "https://127.0.0.1:6443" || tg.Namespace != "mesh" || !strings.Contains(tg.Source, "$KUBECONFIG") {
			t.Errorf("home=%v: host %s namespace %s source %s", home, tg.Config.Host, tg.Namespace, tg.Source)
		}
	}
	if tg, err := Find(other, false); err != nil || tg.Config.Host != "https://127.0.0.2:6443" {
		t.Errorf("an explicit path comes before $KUBECONFIG: %v, %v", tg, err)
	}
	t.Setenv("KUBECONFIG", missing)
	if _, err := Find("", false); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("$KUBECONFIG naming no file: %v, want an error naming it", err)
	}
}

func TestInClusterRequired(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if tg, err := InCluster(false); tg != nil || err != nil {
		t.Errorf("outside a pod, not required: %v, %v; want none", tg, err)
	}
	if _, err := InCluster(true); err == nil {
		t.Error("outside a pod, required: no error")
	}
}
