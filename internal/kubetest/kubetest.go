// Package kubetest starts a real kube-apiserver and etcd for tests, on
// loopback, with the real Istio CRDs (from the istio.io/api module) and the
// Prometheus Operator CRDs (PodMonitor, ServiceMonitor, PrometheusRule)
// installed, and stops them when the test (or the package's tests) end.
//
// The binaries are built by `make kube` (hack/kube/build.sh) into
// $MESHWARD_KUBE_ASSETS, by default ~/.cache/meshward/kube-v1.37.2/bin. When
// they are missing the test fails and says to run `make kube`: Kubernetes
// behaviour is never faked and never silently skipped.
//
// One server per test:
//
//	env := kubetest.Start(t)
//
// One server shared by a package's tests (faster; each test takes its own
// namespace):
//
//	func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }
//	func TestX(t *testing.T) { env := kubetest.Shared(t); ns := env.Namespace(t, "x") ... }
package kubetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Versions of what the harness runs; hack/kube/build.sh builds the same.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.7.3"
	// PrometheusOperatorModule ships the Prometheus Operator CRDs as YAML.
	PrometheusOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
)

// prometheusCRDs are the Prometheus Operator CRDs installed (monitoring.coreos.com/v1).
var prometheusCRDs = []string{
	"monitoring.coreos.com_podmonitors.yaml",
	"monitoring.coreos.com_servicemonitors.yaml",
	"monitoring.coreos.com_prometheusrules.yaml",
}

// Env is a running kube-apiserver with its etcd.
type Env struct {
	// Config reaches the API server as an administrator (system:masters).
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file for the same user.
	Kubeconfig string
	// Kubectl is the path of the kubectl binary (same version as the server).
	Kubectl string
	// Clientset is a core clientset built from Config.
	Clientset kubernetes.Interface
	// StartTime is how long the server took to start and install the CRDs.
	StartTime time.Duration

	env      *envtest.Environment
	dir      string
	watchdog *exec.Cmd
}

// AssetsDir is where the binaries are looked for: $MESHWARD_KUBE_ASSETS, else
// $MESHWARD_KUBE_CACHE/bin, else ~/.cache/meshward/kube-v1.37.2/bin.
func AssetsDir() string {
	if d := os.Getenv("MESHWARD_KUBE_ASSETS"); d != "" {
		return d
	}
	if d := os.Getenv("MESHWARD_KUBE_CACHE"); d != "" {
		return filepath.Join(d, "bin")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "meshward", "kube-"+KubeVersion, "bin")
}

// Start starts a server for this test; it stops when the test ends. Any
// problem (binaries missing, CRDs not found, server not starting) fails
// the test.
func Start(t testing.TB) *Env {
	t.Helper()
	skipShort(t)
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("kubetest: stopping: %v", err)
		}
	})
	return e
}

// skipShort skips a test that needs the API server under go test -short
// (make unit, the quick loop): starting etcd and kube-apiserver takes
// seconds per package. make test runs without -short and skips nothing.
func skipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a kube-apiserver: skipped under -short (make unit); make test runs it")
	}
}

// New starts a server that lives until Stop; Start and Shared are the usual
// ways in.
func New() (*Env, error) {
	assets := AssetsDir()
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if fi, err := os.Stat(filepath.Join(assets, b)); err != nil || fi.IsDir() {
			return nil, fmt.Errorf("kubetest: %s not found in %s: run `make kube` (it builds kube-apiserver, kubectl %s and etcd %s there)",
				b, assets, KubeVersion, EtcdVersion)
		}
	}
	crds, err := CRDPaths()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	no := false
	env := &envtest.Environment{
		CRDDirectoryPaths:        crds,
		ErrorIfCRDPathMissing:    true,
		UseExistingCluster:       &no,
		ControlPlaneStartTimeout: 60 * time.Second,
		ControlPlaneStopTimeout:  20 * time.Second,
	}
	// Explicit paths: no KUBEBUILDER_ASSETS or TEST_ASSET_* from the
	// environment picks other binaries.
	api := env.ControlPlane.GetAPIServer()
	api.Path = filepath.Join(assets, "kube-apiserver")
	api.SecureServing.Address = "127.0.0.1"
	// Loopback only: advertising 127.0.0.1 needs the endpoint reconciler off.
	api.Configure().
		Set("advertise-address", "127.0.0.1").
		Set("endpoint-reconciler-type", "none")
	// Their files live under dir, which Stop (or the watchdog) removes.
	api.CertDir = filepath.Join(dir, "certs")
	for _, d := range []string{"certs", "etcd"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("kubetest: %w", err)
		}
	}
	env.ControlPlane.Etcd = &envtest.Etcd{Path: filepath.Join(assets, "etcd"), DataDir: filepath.Join(dir, "etcd")}
	env.ControlPlane.KubectlPath = filepath.Join(assets, "kubectl")

	begin := time.Now()
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("kubetest: starting kube-apiserver and etcd from %s: %w", assets, err)
	}
	e := &Env{Config: cfg, Kubectl: env.ControlPlane.KubectlPath, env: env, dir: dir, StartTime: time.Since(begin)}
	e.watchdog = watchdog(children(assets), dir)
	e.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, env.KubeConfig, 0o600); err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("kubetest: writing kubeconfig: %w", err)
	}
	if e.Clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("kubetest: clientset: %w", err)
	}
	return e, nil
}

// Stop stops kube-apiserver and etcd and removes their files (idempotent).
func (e *Env) Stop() error {
	if e.env == nil {
		return nil
	}
	if e.watchdog != nil {
		_ = e.watchdog.Process.Kill()
		_ = e.watchdog.Wait()
	}
	err := e.env.Stop()
	e.env = nil
	return errors.Join(err, os.RemoveAll(e.dir))
}

// Namespace creates a namespace named prefix-<random> for this test and
// deletes it when the test ends. (No namespace controller runs, so a deleted
// namespace stays Terminating; names never repeat, so tests stay apart.)
func (e *Env) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := e.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: creating namespace %s-*: %v", prefix, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Clientset.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// EnsureNamespaces creates the named namespaces unless an earlier test on
// the (shared) server made them: without a namespace controller a
// namespace is never deleted, so fixed names are made once and kept.
func (e *Env) EnsureNamespaces(t testing.TB, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ns := range names {
		_, err := e.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("kubetest: creating namespace %s: %v", ns, err)
		}
	}
}

// KubectlCmd is kubectl with this server's kubeconfig.
func (e *Env) KubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.Kubectl, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Kubeconfig)
	return cmd
}

// RunKubectl runs kubectl with this server's kubeconfig and returns its
// combined output; a non-zero exit is an error carrying that output.
func (e *Env) RunKubectl(ctx context.Context, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := e.KubectlCmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// CRDPaths finds the CRD files the harness installs: Istio's from the
// istio.io/api module of this build (go list -m), the Prometheus Operator's
// from its module in the module cache (go mod download, which fetches it
// from the module proxy when the cache lacks it).
func CRDPaths() ([]string, error) {
	istio, err := goCmd("list", "-m", "-f", "{{.Dir}}", "istio.io/api")
	if err != nil {
		return nil, fmt.Errorf("kubetest: finding the istio.io/api module for the Istio CRDs: %w", err)
	}
	istioCRDs := filepath.Join(strings.TrimSpace(istio), "kubernetes", "customresourcedefinitions.gen.yaml")
	out, err := goCmd("mod", "download", "-json", PrometheusOperatorModule)
	if err != nil {
		return nil, fmt.Errorf("kubetest: downloading %s for the Prometheus Operator CRDs: %w", PrometheusOperatorModule, err)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal([]byte(out), &mod); err != nil || mod.Dir == "" {
		return nil, fmt.Errorf("kubetest: go mod download %s: no module directory (%v %s)", PrometheusOperatorModule, err, mod.Error)
	}
	paths := []string{istioCRDs}
	for _, f := range prometheusCRDs {
		paths = append(paths, filepath.Join(mod.Dir, "example", "prometheus-operator-crd", f))
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("kubetest: CRD file missing: %w", err)
		}
	}
	return paths, nil
}

// goCmd runs the go command on PATH.
func goCmd(args ...string) (string, error) {
	bin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is not on PATH: %w", err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %w: %s %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()), strings.TrimSpace(stdout.String()))
	}
	return stdout.String(), nil
}

// shared is the package-wide server of Main and Shared.
var shared struct {
	sync.Mutex
	inMain bool
	env    *Env
	err    error
}

// Main runs a package's tests (call it from TestMain) and stops the shared
// server, if any test started one with Shared, after they end.
func Main(m *testing.M) int {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	defer shared.Unlock()
	if shared.env != nil {
		if err := shared.env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: stopping the shared server: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Shared returns the package's shared server, starting it on first use.
// The package's TestMain must call Main (which stops it). Tests sharing it
// keep apart by namespace (Env.Namespace).
func Shared(t testing.TB) *Env {
	t.Helper()
	skipShort(t)
	shared.Lock()
	defer shared.Unlock()
	if !shared.inMain {
		t.Fatal("kubetest.Shared needs the package's TestMain to call kubetest.Main (which stops the server)")
	}
	if shared.env == nil && shared.err == nil {
		shared.env, shared.err = New()
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.env
}
