// Package kube finds how this process reaches a Kubernetes API server: an
// explicit kubeconfig file, else the in-cluster service account, else none
// (the control plane then runs without Kubernetes).
package kube

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Target is a way to reach an API server, with the namespace this process
// works in by default.
type Target struct {
	Config *rest.Config
	// Namespace: the pod's own namespace in a cluster, the kubeconfig
	// context's namespace otherwise ("default" when it names none).
	Namespace string
	// Source says where Config came from: the kubeconfig path, or "in-cluster".
	Source string
}

// saNamespace is where Kubernetes mounts the pod's namespace.
const saNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Find returns the target for an explicit kubeconfig path, else the
// in-cluster configuration when this runs in a pod; nil (and no error) when
// neither applies. A kubeconfig that cannot be read or used is an error
// naming the file.
func Find(kubeconfig string) (*Target, error) {
	if kubeconfig != "" {
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}, &clientcmd.ConfigOverrides{})
		cfg, err := cc.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
		ns, _, err := cc.Namespace()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: namespace: %w", kubeconfig, err)
		}
		return &Target{Config: cfg, Namespace: ns, Source: kubeconfig}, nil
	}
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("in-cluster Kubernetes configuration: %w", err)
	}
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		if b, err := os.ReadFile(saNamespace); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	}
	if ns == "" {
		ns = "default"
	}
	return &Target{Config: cfg, Namespace: ns, Source: "in-cluster"}, nil
}
