package wasmplugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	extv1alpha1 "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/control-plane/wasmplugin"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/kubetest"
	"github.com/meshward/meshward/models"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// model trains a small real model for dests destination workloads; seeds
// give distinct versions, more destinations a larger encoding.
func model(t testing.TB, seed uint64, dests int) ([]byte, string) {
	cfg := models.DefaultTrainConfig()
	cfg.Seed, cfg.Now = seed, time.Unix(0, 0)
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for d := 0; d < dests; d++ {
		for i := 0; i < 100; i++ {
			tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/r/%d", i), Source: "a", Destination: fmt.Sprintf("svc%d.shop", d)})
		}
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	b, err := models.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b, m.SHA256()
}

// installBase applies the real manifests/istio/base/wasmplugin.yaml into ns
// with kubectl server-side apply, the way the README installs it.
func installBase(t *testing.T, env *kubetest.Env, ns string) {
	src, err := os.ReadFile(filepath.Join("..", "..", "manifests", "istio", "base", "wasmplugin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte("\n  namespace: default\n")) {
		t.Fatal("manifests/istio/base/wasmplugin.yaml no longer sets namespace default; update this test")
	}
	src = bytes.Replace(src, []byte("\n  namespace: default\n"), []byte("\n  namespace: "+ns+"\n"), 1)
	f := filepath.Join(t.TempDir(), "wasmplugin.yaml")
	if err := os.WriteFile(f, src, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := env.RunKubectl(ctx(t), "apply", "--server-side", "--field-manager=kubectl", "-f", f); err != nil {
		t.Fatalf("installing the base WasmPlugin: %v\n%s", err, out)
	}
}

// source is a model store standing in for Redis: the model in force and
// the encoded models by sha.
type source struct {
	current string
	models  map[string][]byte
}

func (s *source) Current(context.Context) (string, error) { return s.current, nil }
func (s *source) Model(_ context.Context, sha string) ([]byte, error) {
	if b, ok := s.models[sha]; ok {
		return b, nil
	}
	return nil, errors.New("no such model")
}

func get(t *testing.T, ic istioclient.Interface, ns string) *extv1alpha1.WasmPlugin {
	t.Helper()
	wp, err := ic.ExtensionsV1alpha1().WasmPlugins(ns).Get(ctx(t), "meshward", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return wp
}

// parsed runs the filter's own parser on the pluginConfig read back.
func parsed(t *testing.T, wp *extv1alpha1.WasmPlugin) *pluginconfig.Settings {
	t.Helper()
	b, err := json.Marshal(wp.Spec.PluginConfig.AsMap())
	if err != nil {
		t.Fatal(err)
	}
	s, err := pluginconfig.Parse(b, "svc0.shop")
	if err != nil {
		t.Fatalf("the filter refuses the pluginConfig read back: %v\n%s", err, b)
	}
	return s
}

// TestWriterOnRealAPIServer: against a kube-apiserver with the real Istio
// CRDs and the real base WasmPlugin, the writer puts the model in by
// server-side apply, owning only the keys it sends; writing again changes
// nothing; a model over budget is refused and the previous one stays; a
// replica that does not lead writes nothing.
func TestWriterOnRealAPIServer(t *testing.T) {
	env := kubetest.Shared(t)
	ns := env.Namespace(t, "wasmplugin")
	installBase(t, env, ns)
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	cfg := wasmplugin.Config{Namespace: ns, Name: "meshward", Base: pluginconfig.Config{Mode: pluginconfig.ModeMonitor}, Identity: "test/1"}
	w, err := wasmplugin.New(cfg, env.Config, log)
	if err != nil {
		t.Fatal(err)
	}
	m1, sha1 := model(t, 1, 1)
	before := get(t, ic, ns)

	// A replica that does not lead writes nothing.
	src := &source{current: sha1, models: map[string][]byte{sha1: m1}}
	leading := false
	sy := &wasmplugin.Syncer{W: w, Src: src, Leading: func() bool { return leading }}
	if r, err := sy.Sync(ctx(t)); err != nil || r.Written {
		t.Fatalf("non-leader Sync: %+v, %v; want no write", r, err)
	}
	if got := get(t, ic, ns); got.ResourceVersion != before.ResourceVersion || got.Spec.PluginConfig.AsMap()["model"] != nil {
		t.Fatalf("a non-leader changed the WasmPlugin: resourceVersion %s → %s", before.ResourceVersion, got.ResourceVersion)
	}

	// The leader writes the model in force.
	leading = true
	r, err := sy.Sync(ctx(t))
	if err != nil || !r.Written {
		t.Fatalf("leader Sync: %+v, %v; want a write", r, err)
	}
	wp := get(t, ic, ns)
	s := parsed(t, wp)
	if s.Model == nil || s.Model.SHA256() != sha1 || s.Mode != pluginconfig.ModeMonitor {
		t.Fatalf("read back mode %s, model %v; want monitor, %s", s.Mode, s.Model, sha1)
	}
	// The user's keys and labels survive, and the object's other fields.
	pc := wp.Spec.PluginConfig.AsMap()
	if pc["collector_token"] != "REPLACE-WITH-THE-COLLECTOR-TOKEN" || pc["sample_rate"] != 0.05 ||
		pc["collector_cluster"] != "outbound|9090||meshward.meshward-system.svc.cluster.local" {
		t.Errorf("the user's pluginConfig keys changed: %v", pc)
	}
	if wp.Labels["app.kubernetes.io/component"] != "filter" || wp.Spec.Url != before.Spec.Url || wp.Spec.Sha256 != before.Spec.Sha256 {
		t.Errorf("labels or spec changed: %v %s %s", wp.Labels, wp.Spec.Url, wp.Spec.Sha256)
	}
	// meshward owns exactly pluginConfig's model and mode.
	owned := ownedBy(t, wp, wasmplugin.FieldManager)
	if want := []string{"f:spec", "f:spec.f:pluginConfig", "f:spec.f:pluginConfig.f:mode", "f:spec.f:pluginConfig.f:model"}; strings.Join(owned, " ") != strings.Join(want, " ") {
		t.Errorf("meshward's managed fields: %v, want %v", owned, want)
	}
	if k := ownedBy(t, wp, "kubectl"); !contains(k, "f:spec.f:pluginConfig.f:collector_token") || contains(k, "f:spec.f:pluginConfig.f:mode") {
		t.Errorf("kubectl's managed fields: %v; want collector_token kept, mode taken over", k)
	}
	if !strings.Contains(logs.String(), `"msg":"wasmplugin: model written","audit":true`) || !strings.Contains(logs.String(), sha1) {
		t.Errorf("no audit line for the write: %s", logs.String())
	}
	if !hasEvent(t, env, ns, "ModelApplied", sha1[:12]) {
		t.Error("no ModelApplied Event naming the model")
	}

	// The same model again: no write.
	r, err = w.Apply(ctx(t), sha1, m1)
	if err != nil || r.Written || r.ResourceVersion != wp.ResourceVersion {
		t.Fatalf("second Apply: %+v, %v; want no write at resourceVersion %s", r, err, wp.ResourceVersion)
	}
	if got := get(t, ic, ns); got.ResourceVersion != wp.ResourceVersion {
		t.Errorf("resourceVersion changed %s → %s on an equal write", wp.ResourceVersion, got.ResourceVersion)
	}

	// A larger model over the budget: refused with ErrTooLarge, nothing
	// changes, a Warning Event says so. (The budget is set just above the
	// object with m1, so a real larger model crosses it.)
	m2, sha2 := model(t, 2, 20)
	small := cfg
	small.MaxObjectBytes = r0(t, w, sha1, m1) + 64
	ws, err := wasmplugin.New(small, env.Config, log)
	if err != nil {
		t.Fatal(err)
	}
	src.current, src.models[sha2] = sha2, m2
	sy.W = ws
	_, err = sy.Sync(ctx(t))
	if !errors.Is(err, wasmplugin.ErrTooLarge) || !strings.Contains(err.Error(), "too large for a WasmPlugin object") || !strings.Contains(err.Error(), sha2[:12]) {
		t.Fatalf("over budget: got %v, want ErrTooLarge naming the model", err)
	}
	after := get(t, ic, ns)
	if after.ResourceVersion != wp.ResourceVersion || parsed(t, after).Model.SHA256() != sha1 {
		t.Errorf("a refused model changed the WasmPlugin")
	}
	if !hasEvent(t, env, ns, "ModelTooLarge", sha2[:12]) {
		t.Error("no ModelTooLarge Event")
	}
	// Refused once, not retried every tick.
	if r, err := sy.Sync(ctx(t)); err != nil || r.Written {
		t.Errorf("Sync after a refusal: %+v, %v; want nothing done", r, err)
	}

	// With the default budget, a real model the filter itself would take
	// (under models.MaxModelBytes, its config under pluginconfig's limit)
	// but whose base64 takes the object over 1 MiB is refused too.
	big, shaBig := model(t, 3, 5200)
	if len(big) > models.MaxModelBytes || len(big)*4/3 < wasmplugin.DefaultMaxObjectBytes {
		t.Fatalf("the big model is %d bytes: not between the object budget and the filter's limit", len(big))
	}
	bc := pluginconfig.Config{Mode: pluginconfig.ModeMonitor}
	if doc, _ := bc.WithModel(big).Encode(); len(doc) > pluginconfig.MaxConfigBytes {
		t.Fatalf("the big model's config is %d bytes, over the filter's limit", len(doc))
	} else if _, err := pluginconfig.Parse(doc, "svc0.shop"); err != nil {
		t.Fatalf("the filter refuses the big model itself: %v", err)
	}
	_, err = w.Apply(ctx(t), shaBig, big)
	if !errors.Is(err, wasmplugin.ErrTooLarge) || !strings.Contains(err.Error(), "over the budget of 1048576") {
		t.Fatalf("a %d-byte model with the default budget: got %v, want ErrTooLarge", len(big), err)
	}
	t.Logf("refused: %v", err)
	if got := get(t, ic, ns); got.ResourceVersion != wp.ResourceVersion {
		t.Errorf("a refused model changed the WasmPlugin")
	}

	// With the default budget the larger model goes in.
	sy.W = w
	src.current, src.models[sha2] = sha2, m2
	if r, err := w.Apply(ctx(t), sha2, m2); err != nil || !r.Written {
		t.Fatalf("larger model within the default budget: %+v, %v", r, err)
	}
	if got := parsed(t, get(t, ic, ns)); got.Model.SHA256() != sha2 {
		t.Errorf("model read back %s, want %s", got.Model.SHA256(), sha2)
	}

	// A key dropped from the base is removed: a threshold written once,
	// then a writer without it.
	withThreshold := cfg
	th := 0.9
	withThreshold.Base.Threshold = &th
	wt, err := wasmplugin.New(withThreshold, env.Config, log)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := wt.Apply(ctx(t), sha2, m2); err != nil || !r.Written {
		t.Fatalf("adding a threshold: %+v, %v", r, err)
	}
	if got := parsed(t, get(t, ic, ns)); got.Threshold != 0.9 {
		t.Fatalf("threshold read back %v, want 0.9", got.Threshold)
	}
	if r, err := w.Apply(ctx(t), sha2, m2); err != nil || !r.Written {
		t.Fatalf("dropping the threshold: %+v, %v; want a write", r, err)
	}
	if pc := get(t, ic, ns).Spec.PluginConfig.AsMap(); pc["threshold"] != nil {
		t.Errorf("threshold still there after meshward stopped sending it: %v", pc["threshold"])
	}
	if r, err := w.Apply(ctx(t), sha2, m2); err != nil || r.Written {
		t.Errorf("again without the threshold: %+v, %v; want no write", r, err)
	}

	// Re-applying the manifest server-side now conflicts on the keys
	// meshward owns (the README says to add --force-conflicts, which hands
	// mode back to the manifest and keeps the model).
	f := filepath.Join(t.TempDir(), "wp.yaml")
	src2, _ := os.ReadFile(filepath.Join("..", "..", "manifests", "istio", "base", "wasmplugin.yaml"))
	_ = os.WriteFile(f, bytes.Replace(src2, []byte("\n  namespace: default\n"), []byte("\n  namespace: "+ns+"\n"), 1), 0o600)
	out, err := env.RunKubectl(ctx(t), "apply", "--server-side", "--field-manager=kubectl", "-f", f)
	if err == nil || !strings.Contains(out, `conflict with "meshward"`) || !strings.Contains(out, ".spec.pluginConfig.mode") {
		t.Errorf("re-applying the manifest: %v\n%s\nwant a conflict on .spec.pluginConfig.mode with meshward", err, out)
	}
	if out, err := env.RunKubectl(ctx(t), "apply", "--server-side", "--force-conflicts", "--field-manager=kubectl", "-f", f); err != nil {
		t.Fatalf("re-applying with --force-conflicts: %v\n%s", err, out)
	}
	if got := parsed(t, get(t, ic, ns)); got.Mode != pluginconfig.ModeLearn || got.Model.SHA256() != sha2 {
		t.Errorf("after --force-conflicts: mode %s model %v; want learn and the model kept", got.Mode, got.Model)
	}
}

// r0 is the object size Apply measures for a model already in place.
func r0(t *testing.T, w *wasmplugin.Writer, sha string, m []byte) int {
	r, err := w.Apply(ctx(t), sha, m)
	if err != nil || r.Written || r.ObjectBytes == 0 {
		t.Fatalf("Apply of the model in place: %+v, %v", r, err)
	}
	return r.ObjectBytes
}

// TestMissingWasmPlugin: the writer never creates the object and says
// what to do.
func TestMissingWasmPlugin(t *testing.T) {
	env := kubetest.Shared(t)
	ns := env.Namespace(t, "nowp")
	w, err := wasmplugin.New(wasmplugin.Config{Namespace: ns, Name: "meshward", Base: pluginconfig.Config{Mode: pluginconfig.ModeMonitor}}, env.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m, sha := model(t, 1, 1)
	_, err = w.Apply(ctx(t), sha, m)
	if err == nil || !strings.Contains(err.Error(), "WasmPlugin "+ns+"/meshward not found") {
		t.Errorf("got %v, want a not-found error naming the WasmPlugin", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ownedBy flattens a manager's FieldsV1 (Apply and Update operations) into
// sorted dotted paths.
func ownedBy(t *testing.T, wp *extv1alpha1.WasmPlugin, manager string) []string {
	t.Helper()
	var paths []string
	for _, mf := range wp.ManagedFields {
		if mf.Manager != manager || mf.FieldsV1 == nil {
			continue
		}
		var tree map[string]any
		if err := json.Unmarshal(mf.FieldsV1.Raw, &tree); err != nil {
			t.Fatal(err)
		}
		var walk func(prefix string, m map[string]any)
		walk = func(prefix string, m map[string]any) {
			for k, v := range m {
				if k == "." {
					continue
				}
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				if strings.HasPrefix(p, "f:metadata.") {
					continue
				}
				paths = append(paths, p)
				if sub, ok := v.(map[string]any); ok {
					walk(p, sub)
				}
			}
		}
		walk("", tree)
	}
	sort.Strings(paths)
	return paths
}

// hasEvent polls for an events.k8s.io Event with reason whose note
// contains substr.
func hasEvent(t *testing.T, env *kubetest.Env, ns, reason, substr string) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := env.Clientset.EventsV1().Events(ns).List(ctx(t), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Reason == reason && strings.Contains(e.Note, substr) && e.Regarding.Kind == "WasmPlugin" && e.ReportingController == "meshward.io/control-plane" {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
