// Package kube finds how this process reaches a Kubernetes API server. One
// function, Find, serves every command: the kubeconfig file given
// (-kubeconfig), else the files $KUBECONFIG names, else (for the commands a
// person types, never serve) ~/.kube/config, else the in-cluster service
// account, else none (the control plane then runs without Kubernetes).
package kube

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// Find returns the target to use, looking in this order: the kubeconfig
// path given (the -kubeconfig flag); the files $KUBECONFIG names; with
// home set, ~/.kube/config; the in-cluster configuration when this runs in
// a pod. It returns nil (and no error) when none applies. home is for the
// commands a person runs at a terminal (policy list, run --kubeconfig):
// `meshward serve` passes false, so a control plane started on a laptop
// never writes quarantines into whatever cluster the user's kubectl
// points at. A kubeconfig that cannot be read or used is an error naming
// the file.
func Find(kubeconfig string, home bool) (*Target, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}
	source := kubeconfig
	if kubeconfig == "" {
		var err error
		if rules.Precedence, source, err = defaultFiles(home); err != nil {
			return nil, err
		}
		if len(rules.Precedence) == 0 {
			return InCluster(false)
		}
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", source, err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: namespace: %w", source, err)
	}
	return &Target{Config: cfg, Namespace: ns, Source: source}, nil
}

// defaultFiles returns the kubeconfig files to read when none is given, and
// how to name them in messages: those of $KUBECONFIG that exist (naming
// none that does is an error, as a typo there would otherwise go unseen),
// else ~/.kube/config when home is set and it exists, else none.
func defaultFiles(home bool) ([]string, string, error) {
	const envVar = clientcmd.RecommendedConfigPathEnvVar
	if env := os.Getenv(envVar); env != "" {
		var files []string
		for _, p := range filepath.SplitList(env) {
			if _, err := os.Stat(p); err == nil {
				files = append(files, p)
			}
		}
		if len(files) == 0 {
			return nil, "", fmt.Errorf("$%s=%s names no kubeconfig file that exists", envVar, env)
		}
		return files, "$" + envVar + " (" + env + ")", nil
	}
	if _, err := os.Stat(clientcmd.RecommendedHomeFile); home && err == nil {
		return []string{clientcmd.RecommendedHomeFile}, clientcmd.RecommendedHomeFile, nil
	}
	return nil, "", nil
}

// InCluster returns the target of the pod's service account. Outside a pod
// it returns nil and no error, unless required is set (the --in-cluster
// flag), when that is an error too.
func InCluster(required bool) (*Target, error) {
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) && !required {
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
