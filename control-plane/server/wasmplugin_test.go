package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	extensionsv1alpha1 "istio.io/api/extensions/v1alpha1"
	typev1beta1 "istio.io/api/type/v1beta1"
	extv1alpha1 "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/control-plane/wasmplugin"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/kubetest"
	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models"
)

// TestServeWritesTheWasmPlugin: two replicas configured with -wasmplugin
// share a Redis and a Lease; a model made current in the store reaches the
// WasmPlugin of the namespace's workload (cart, which the model has no
// section for: the fallback), written by the leader only (every Event names
// the leader), and the filter's parser accepts what is there.
func TestServeWritesTheWasmPlugin(t *testing.T) {
	env, ns, ic := wasmPluginNamespace(t, "serve-wp", map[string]any{"mode": "monitor", "sample_rate": 0.05})
	addr := redistest.Start(t).Addr
	var replicas []*Server
	for i := 0; i < 2; i++ {
		s := startWith(t, addr, func(c *Config) {
			c.XDS.WasmURI = "" // the WasmPlugin path: Istio delivers the filter
			c.Kube, c.LeaseNamespace = env.Config, ns
			c.WasmPlugin = wasmplugin.Config{Namespace: ns, Name: "meshward"}
		})
		replicas = append(replicas, s)
	}
	// Which one leads (poll: the election takes a moment).
	var leader, other *Server
	deadline := time.Now().Add(20 * time.Second)
	for leader == nil {
		if time.Now().After(deadline) {
			t.Fatal("no replica leads within 20 s")
		}
		for i, s := range replicas {
			if s.elector.Leading() {
				leader, other = s, replicas[1-i]
			}
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	stored := putModel(t, leader.store, testModel(t, 7))
	if err := leader.store.SetCurrent(context.Background(), stored.version); err != nil {
		t.Fatal(err)
	}
	rel, _ := leader.store.Release(context.Background(), stored.version)
	var got *pluginconfig.Settings
	deadline = time.Now().Add(20 * time.Second)
	for got == nil || got.Model == nil || got.Model.SHA256() != rel.Sections[models.GlobalWorkload] {
		if time.Now().After(deadline) {
			t.Fatalf("the WasmPlugin of cart did not get the fallback section of %.12s within 20 s (last: %+v)", stored.version, got)
		}
		w, err := ic.ExtensionsV1alpha1().WasmPlugins(ns).Get(context.Background(), "meshward-cart", metav1.GetOptions{})
		if err == nil {
			b, _ := json.Marshal(w.Spec.PluginConfig.AsMap())
			if got, err = pluginconfig.Parse(b, ""); err != nil {
				t.Fatalf("the filter refuses the WasmPlugin's pluginConfig: %v", err)
			}
		} else if !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	if got.Mode != pluginconfig.ModeMonitor || got.SampleRate != 0.05 || got.Workload != "cart."+ns {
		t.Errorf("mode %s sample_rate %v workload %s; want the template's monitor and 0.05, and cart.%s", got.Mode, got.SampleRate, got.Workload, ns)
	}
	evs, err := env.Clientset.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs.Items {
		if e.Reason != "ModelApplied" || !strings.Contains(e.Note, "section "+rel.Sections[models.GlobalWorkload][:12]) {
			continue
		}
		n++
		if !strings.HasSuffix(e.ReportingInstance, "/"+leader.CollectorURL) || strings.HasSuffix(e.ReportingInstance, "/"+other.CollectorURL) {
			t.Errorf("Event from %q; want only the leader (…/%s)", e.ReportingInstance, leader.CollectorURL)
		}
	}
	if n != 1 {
		t.Errorf("%d ModelApplied Events with the model, want 1 (one write)", n)
	}

	// An exception granted on the other replica reaches cart's WasmPlugin
	// (the leader writes it) without a new model, and the filter's parser
	// accepts it there.
	code, body := adminDo(t, "POST", other.AdminURL+"/api/v1/exceptions", adminToken,
		`{"id":"orders-release","workload":"*","caller":"spiffe://cluster.local/ns/shop/sa/orders","reason":"release 2","ttl":"1h"}`)
	if code != 200 && code != 201 {
		t.Fatalf("POST /api/v1/exceptions: %d %s", code, body)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		w, err := ic.ExtensionsV1alpha1().WasmPlugins(ns).Get(context.Background(), "meshward-cart", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(w.Spec.PluginConfig.AsMap())
		if got, err = pluginconfig.Parse(b, ""); err != nil {
			t.Fatalf("the filter refuses the WasmPlugin's pluginConfig with an exception: %v", err)
		}
		if len(got.Policy.Rules) == 1 && got.Policy.Rules[0].ID == "orders-release" {
			if got.Model == nil || got.Model.SHA256() != rel.Sections[models.GlobalWorkload] {
				t.Errorf("the exception came with another model: %v", got.Model)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cart's WasmPlugin did not get the exception within 20 s: %+v", got.Policy.Rules)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// TestServeWasmPluginNeedsKube: -wasmplugin without an API server is a
// clear error at start.
func TestServeWasmPluginNeedsKube(t *testing.T) {
	cfg := testConfig()
	cfg.CollectorAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Redis = redistest.Start(t).Addr
	cfg.WasmPlugin = wasmplugin.Config{Namespace: "default", Name: "meshward"}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(context.Background())
	t.Cleanup(func() { _ = s.Close() })
	if err == nil || !strings.Contains(err.Error(), "-wasmplugin needs a Kubernetes API server") {
		t.Errorf("got %v, want the -wasmplugin error", err)
	}
}

// wasmPluginNamespace makes a namespace holding a WasmPlugin template
// "meshward" with pluginConfig config, and a Deployment cart.
func wasmPluginNamespace(t *testing.T, prefix string, config map[string]any) (*kubetest.Env, string, istioclient.Interface) {
	t.Helper()
	env, ic := sharedKube(t)
	ns := env.Namespace(t, prefix)
	pc, err := structpb.NewStruct(config)
	if err != nil {
		t.Fatal(err)
	}
	wp := &extv1alpha1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Name: "meshward", Namespace: ns},
		Spec: extensionsv1alpha1.WasmPlugin{Url: "oci://ghcr.io/meshward/meshward-wasm:0.1.0", PluginConfig: pc,
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{wasmplugin.LabelTemplate: wasmplugin.TemplateSelectorValue}}}}
	if _, err := ic.ExtensionsV1alpha1().WasmPlugins(ns).Create(context.Background(), wp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cart := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: ns}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "cart"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "cart"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "cart", Image: "example.invalid/cart"}}}}}}
	if _, err := env.Clientset.AppsV1().Deployments(ns).Create(context.Background(), cart, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return env, ns, ic
}

// TestWasmPluginLearnFirstFollowsReadiness: with -wasmplugin and
// -filter-learn-first, a workload's WasmPlugin runs in learn while its
// section is learning, in monitor once it is ready for monitor, and in its
// template's enforce once ready for enforce, as xDS would serve it; and an
// assessment only ever lowers the template's mode (a template in monitor
// never enforces, whatever the verdict).
func TestWasmPluginLearnFirstFollowsReadiness(t *testing.T) {
	for _, c := range []struct {
		template string
		want     []pluginconfig.Mode // when learning, ready for monitor, ready for enforce
	}{
		{"enforce", []pluginconfig.Mode{pluginconfig.ModeLearn, pluginconfig.ModeMonitor, pluginconfig.ModeEnforce}},
		{"monitor", []pluginconfig.Mode{pluginconfig.ModeLearn, pluginconfig.ModeMonitor, pluginconfig.ModeMonitor}},
	} {
		t.Run(c.template, func(t *testing.T) {
			env, ns, ic := wasmPluginNamespace(t, "wp-ready", map[string]any{"mode": c.template})
			s := startWith(t, redistest.Start(t).Addr, func(cfg *Config) {
				cfg.XDS.WasmURI = ""
				cfg.Kube, cfg.LeaseNamespace = env.Config, ns
				cfg.WasmPlugin = wasmplugin.Config{Namespace: ns, Name: "meshward"}
				cfg.XDS.LearnFirst = true
			})
			ctx := context.Background()
			A := putModel(t, s.store, testModel(t, 1))
			assess := func(verdict string) {
				t.Helper()
				b, _ := json.Marshal(map[string]any{"workload": "cart." + ns, "verdict": verdict, "reason": "test", "at": time.Now()})
				if err := s.store.PutReadiness(ctx, A.version, map[string][]byte{"cart." + ns: b}); err != nil {
					t.Fatal(err)
				}
			}
			assess("learning")
			if err := s.store.SetCurrent(ctx, A.version); err != nil {
				t.Fatal(err)
			}
			mode := func() pluginconfig.Mode {
				w, err := ic.ExtensionsV1alpha1().WasmPlugins(ns).Get(ctx, "meshward-cart", metav1.GetOptions{})
				if err != nil {
					return ""
				}
				b, _ := json.Marshal(w.Spec.PluginConfig.AsMap())
				got, err := pluginconfig.Parse(b, "")
				if err != nil {
					t.Fatalf("the filter refuses the WasmPlugin's pluginConfig: %v", err)
				}
				if got.Model == nil {
					return ""
				}
				return got.Mode
			}
			for i, verdict := range []string{"learning", "ready for monitor", "ready for enforce"} {
				assess(verdict)
				want := c.want[i]
				eventuallyWithin(t, 30*time.Second, "cart's WasmPlugin in "+string(want)+" when "+verdict, func() bool { return mode() == want })
			}
		})
	}
}
