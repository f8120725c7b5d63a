package server

import (
	"context"
	"os"
	"testing"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/control-plane/policy"
	"github.com/meshward/meshward/internal/kubetest"
)

// The package's tests share one kube-apiserver (starting one costs about
// 6 s of a busy machine's two cores); sharedKube keeps them apart.
func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

// sharedKube is the package's API server for this test. The namespaces
// the test's identities name (spiffe://cluster.local/ns/shop/...) are made
// if an earlier test has not made them (without a namespace controller a
// namespace is never deleted); Leases go in a namespace of the test's own.
// When the test ends, after its replicas have stopped, the quarantine
// policies it left are deleted, so the next test counts only its own.
func sharedKube(t *testing.T, namespaces ...string) (*kubetest.Env, istioclient.Interface) {
	t.Helper()
	env := kubetest.Shared(t)
	ctx := context.Background()
	env.EnsureNamespaces(t, namespaces...)
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l, err := ic.SecurityV1().AuthorizationPolicies("").List(ctx, metav1.ListOptions{LabelSelector: policy.OwnedSelector})
		if err != nil {
			t.Errorf("listing the policies left: %v", err)
			return
		}
		for _, ap := range l.Items {
			if err := ic.SecurityV1().AuthorizationPolicies(ap.Namespace).Delete(ctx, ap.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting %s/%s: %v", ap.Namespace, ap.Name, err)
			}
		}
	})
	return env, ic
}
