package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/kube"
	"github.com/meshward/meshward/control-plane/quarantine"
)

// kubeFlags say how to reach the Kubernetes API server.
type kubeFlags struct {
	kubeconfig string
	inCluster  bool
}

func (f *kubeFlags) register(fs *flag.FlagSet, what string) {
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", what+": the kubeconfig of the API server (or $KUBECONFIG)")
	fs.BoolVar(&f.inCluster, "in-cluster", false, what+": use the pod's service account (inside Kubernetes)")
}

// set says whether an API server was asked for.
func (f *kubeFlags) set() bool { return f.kubeconfig != "" || f.inCluster }

// config returns the REST configuration: the pod's service account with
// --in-cluster, else what kube.Find finds (the --kubeconfig given,
// $KUBECONFIG, ~/.kube/config, the service account in a pod).
func (f *kubeFlags) config() (*rest.Config, error) {
	var t *kube.Target
	var err error
	if f.inCluster {
		t, err = kube.InCluster(true)
	} else {
		t, err = kube.Find(f.kubeconfig, true)
	}
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, errNoKube
	}
	return t.Config, nil
}

// applier connects to the API server and rebuilds the quarantines it holds.
func (f *kubeFlags) applier(rules decide.Rules, log *slog.Logger) (*quarantine.Applier, error) {
	cfg, err := f.config()
	if err != nil {
		return nil, err
	}
	return newApplier(cfg, rules, nil, log)
}

// newApplier connects to the API server and rebuilds the quarantines it
// holds.
func newApplier(cfg *rest.Config, rules decide.Rules, namespaces []string, log *slog.Logger) (*quarantine.Applier, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 30 * time.Second
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	a, err := quarantine.New(quarantine.Config{Rules: rules, Instance: host, Namespaces: namespaces}, ic, kc, log)
	if err != nil {
		return nil, err
	}
	if err := a.Rebuild(context.Background()); err != nil {
		return nil, fmt.Errorf("reading meshward's AuthorizationPolicies from %s: %w", cfg.Host, err)
	}
	return a, nil
}

// auditLog is where commands write their JSON audit lines.
func auditLog(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

var errNoKube = errors.New("no API server: give --kubeconfig (or set $KUBECONFIG), or run in a pod (--in-cluster)")
