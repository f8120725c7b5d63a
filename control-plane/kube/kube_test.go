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
	if tg, err := Find(""); tg != nil || err != nil {
		t.Fatalf("outside a cluster without a kubeconfig: %v, %v; want none", tg, err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "config")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	tg, err := Find(path)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Config.Host != "https://127.0.0.1:6443" || tg.Namespace != "mesh" || tg.Source != path {
		t.Errorf("got host %s namespace %s source %s", tg.Config.Host, tg.Namespace, tg.Source)
	}
	// A context without a namespace: "default".
	noNS := strings.Replace(kubeconfig, "current-context: with-ns", "current-context: no-ns", 1)
	if err := os.WriteFile(path, []byte(noNS), 0o600); err != nil {
		t.Fatal(err)
	}
	if tg, err := Find(path); err != nil || tg.Namespace != "default" {
		t.Errorf("context without namespace: %v, %v", tg, err)
	}
	missing := filepath.Join(dir, "nope")
	if _, err := Find(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing kubeconfig: %v, want an error naming it", err)
	}
}
