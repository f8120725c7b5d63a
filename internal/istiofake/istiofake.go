// Package istiofake is istio.io/client-go's fake clientset on a
// field-managed object tracker, so server-side apply creates objects and
// tracks field managers as an API server would (the generated
// NewSimpleClientset only patches objects that exist). For unit tests;
// behaviour that matters is also tested against a real kube-apiserver
// (internal/kubetest).
package istiofake

import (
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	istioscheme "istio.io/client-go/pkg/clientset/versioned/scheme"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/watch"
	clienttesting "k8s.io/client-go/testing"
)

// New returns an empty fake Istio clientset.
func New() *istiofake.Clientset {
	codecs := serializer.NewCodecFactory(istioscheme.Scheme)
	tracker := clienttesting.NewFieldManagedObjectTracker(istioscheme.Scheme, codecs.UniversalDecoder(), managedfields.NewDeducedTypeConverter())
	cs := &istiofake.Clientset{}
	cs.AddReactor("*", "*", clienttesting.ObjectReaction(tracker))
	cs.AddWatchReactor("*", func(action clienttesting.Action) (bool, watch.Interface, error) {
		w, err := tracker.Watch(action.GetResource(), action.GetNamespace())
		return err == nil, w, err
	})
	return cs
}
