package quarantine

import (
	"context"
	"testing"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/internal/kubetest"
)

// startKube starts a real kube-apiserver (with the Istio CRDs) with the
// given namespaces, and returns Istio and core clients on it.
func startKube(t testing.TB, namespaces ...string) (*kubetest.Env, istioclient.Interface) {
	t.Helper()
	env := kubetest.Start(t)
	for _, ns := range namespaces {
		if _, err := env.Clientset.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return env, ic
}

// TestLifecycleKube is the applier's whole life against a real API server
// enforcing the Istio CRDs' schemas: server-side apply, promotion, a
// foreign object, restart, release, expiry, Events.
func TestLifecycleKube(t *testing.T) {
	env, ic := startKube(t, "train", "auth")
	testLifecycle(t, ic, env.Clientset, true)
}
