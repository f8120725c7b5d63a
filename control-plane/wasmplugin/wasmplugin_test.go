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
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/control-plane/trainer"
	"github.com/meshward/meshward/control-plane/wasmplugin"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/kubetest"
	"github.com/meshward/meshward/internal/meshgen"
	"github.com/meshward/meshward/models"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// installBase applies the real manifests/istio/base/wasmplugin.yaml (the
// template) into ns with kubectl server-side apply, the way the manifests
// install it; edit changes it first.
func installBase(t *testing.T, env *kubetest.Env, ns string, edit func([]byte) []byte) {
	src, err := os.ReadFile(filepath.Join("..", "..", "manifests", "istio", "base", "wasmplugin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte("\n  namespace: default\n")) {
		t.Fatal("manifests/istio/base/wasmplugin.yaml no longer sets namespace default; update this test")
	}
	src = bytes.Replace(src, []byte("\n  namespace: default\n"), []byte("\n  namespace: "+ns+"\n"), 1)
	if edit != nil {
		src = edit(src)
	}
	f := filepath.Join(t.TempDir(), "wasmplugin.yaml")
	if err := os.WriteFile(f, src, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := env.RunKubectl(ctx(t), "apply", "--server-side", "--field-manager=kubectl", "-f", f); err != nil {
		t.Fatalf("installing the template: %v\n%s", err, out)
	}
}

// deploy creates a Deployment whose pods carry app=name (no pod runs: the
// API server alone has no controllers).
func deploy(t *testing.T, env *kubetest.Env, ns, name string, sel *metav1.LabelSelector) {
	if sel == nil {
		sel = &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}
	}
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: appsv1.DeploymentSpec{
		Selector: sel,
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}}},
	}}
	if _, err := env.Clientset.AppsV1().Deployments(ns).Create(ctx(t), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// source is a model store standing in for Redis: the release in force and
// the sections by workload and sha.
type source struct {
	current  string
	releases map[string]map[string]string
	sections map[string][]byte // workload + " " + sha
}

func (s *source) Current(context.Context) (string, error) { return s.current, nil }
func (s *source) ReleaseSections(_ context.Context, v string) (map[string]string, error) {
	if r, ok := s.releases[v]; ok {
		return r, nil
	}
	return nil, errors.New("no such release")
}
func (s *source) Section(_ context.Context, w, sha string) ([]byte, error) {
	if b, ok := s.sections[w+" "+sha]; ok {
		return b, nil
	}
	return nil, errors.New("no such section")
}

// put adds a release of the sections given (workload → encoding).
func (s *source) put(version string, secs map[string][]byte) {
	if s.releases == nil {
		s.releases, s.sections = map[string]map[string]string{}, map[string][]byte{}
	}
	r := map[string]string{}
	for w, b := range secs {
		m, err := models.DecodeSection(b)
		if err != nil {
			panic(err)
		}
		r[w] = m.SHA256()
		s.sections[w+" "+m.SHA256()] = b
	}
	s.releases[version] = r
}

// renamed is a section of another workload moved to workload (the same
// part under another name), as a mesh's section for this namespace.
func renamed(t testing.TB, b []byte, workload string) []byte {
	m, err := models.DecodeSection(b)
	if err != nil {
		t.Fatal(err)
	}
	if workload != models.GlobalWorkload {
		for _, w := range m.Workloads {
			w.Name = workload
			m.Workloads = map[string]*models.Workload{workload: w}
		}
		m.SectionFor = workload
	}
	out, err := models.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// meshSections trains a mesh of n services as the control plane does and
// gives the sections of its first k services to workloads reviews, ratings,
// ... of namespace ns, and its fallback.
func meshSections(t testing.TB, n int, names []string, ns string) map[string][]byte {
	secs, err := meshgen.Train(n, 200, trainer.DefaultConfig().Train)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	var mesh []string
	for _, name := range secs.Names() {
		if name != models.GlobalWorkload {
			mesh = append(mesh, name)
		}
	}
	for i, name := range names {
		b, err := secs.Encode(mesh[i])
		if err != nil {
			t.Fatal(err)
		}
		out[name+"."+ns] = renamed(t, b, name+"."+ns)
	}
	b, err := secs.Encode(models.GlobalWorkload)
	if err != nil {
		t.Fatal(err)
	}
	out[models.GlobalWorkload] = b
	return out
}

// plugins reads the WasmPlugins meshward made, by name.
func plugins(t *testing.T, ic istioclient.Interface, ns string) map[string]*extv1alpha1.WasmPlugin {
	list, err := ic.ExtensionsV1alpha1().WasmPlugins(ns).List(ctx(t), metav1.ListOptions{LabelSelector: wasmplugin.LabelManagedBy + "=meshward"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*extv1alpha1.WasmPlugin{}
	for _, wp := range list.Items {
		out[wp.Name] = wp
	}
	return out
}

// parsed runs the filter's own parser on a WasmPlugin's pluginConfig, with
// no workload from node metadata: the configuration must name it.
func parsed(t *testing.T, wp *extv1alpha1.WasmPlugin) (*pluginconfig.Settings, int) {
	t.Helper()
	b, err := json.Marshal(wp.Spec.PluginConfig.AsMap())
	if err != nil {
		t.Fatal(err)
	}
	s, err := pluginconfig.Parse(b, "")
	if err != nil {
		t.Fatalf("the filter refuses the pluginConfig of %s: %v", wp.Name, err)
	}
	return s, len(b)
}

// TestOneWasmPluginPerWorkload: against a kube-apiserver with the real
// Istio CRDs and the real template, with sections of a 1,000-service mesh:
// a replica that does not lead writes nothing; the leader gives every
// workload of the namespace a WasmPlugin of its own (its selector, the
// template's module and keys, its section — or the fallback), each within
// 64 KiB of configuration whatever the mesh; writing again changes
// nothing; a retrain that changes one section rewrites one object; a
// workload gone loses its WasmPlugin; a section too large is refused by
// name and the others are written.
func TestOneWasmPluginPerWorkload(t *testing.T) {
	env := kubetest.Shared(t)
	ns := env.Namespace(t, "wasmplugin")
	installBase(t, env, ns, nil)
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"reviews", "ratings", "details"} {
		deploy(t, env, ns, name, nil)
	}
	deploy(t, env, ns, "by-expression", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"by-expression"}}}})
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	cfg := wasmplugin.Config{Namespace: ns, Name: "meshward", Identity: "test/1"}
	w, err := wasmplugin.New(cfg, env.Config, log)
	if err != nil {
		t.Fatal(err)
	}
	src := &source{}
	leading := false
	sy := &wasmplugin.Syncer{W: w, Src: src, Leading: func() bool { return leading }}
	if r, err := sy.Sync(ctx(t)); err != nil || r.Written != 0 || len(plugins(t, ic, ns)) != 0 {
		t.Fatalf("non-leader Sync: %+v, %v; want no write", r, err)
	}

	// Before any model: every workload in learn mode, shipping samples.
	leading = true
	r, err := sy.Sync(ctx(t))
	if err != nil || r.Written != 3 || r.Targets != 3 {
		t.Fatalf("leader Sync before a model: %+v, %v; want 3 writes", r, err)
	}
	for _, wp := range plugins(t, ic, ns) {
		if s, _ := parsed(t, wp); s.Mode != pluginconfig.ModeLearn || s.Model != nil || s.CollectorCluster == "" {
			t.Errorf("%s before a model: mode %s, model %v, collector %q", wp.Name, s.Mode, s.Model != nil, s.CollectorCluster)
		}
	}

	// A model in force: reviews and ratings have sections (of a
	// 1,000-service mesh), details gets the fallback.
	secs := meshSections(t, 1000, []string{"reviews", "ratings"}, ns)
	src.put("v1", secs)
	src.current = "v1"
	if r, err := sy.Sync(ctx(t)); err != nil || r.Written != 3 || len(r.Errors) != 0 {
		t.Fatalf("leader Sync with a model: %+v, %v", r, err)
	}
	tpl, err := ic.ExtensionsV1alpha1().WasmPlugins(ns).Get(ctx(t), "meshward", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := plugins(t, ic, ns)
	if len(got) != 3 {
		t.Fatalf("%d WasmPlugins, want 3 (by-expression has no matchLabels selector)", len(got))
	}
	for _, name := range []string{"reviews", "ratings", "details"} {
		wp := got["meshward-"+name]
		if wp == nil {
			t.Fatalf("no WasmPlugin meshward-%s: %v", name, got)
		}
		s, size := parsed(t, wp)
		wantFor := name + "." + ns
		if name == "details" {
			wantFor = models.GlobalWorkload
		}
		if s.Workload != name+"."+ns || s.Model == nil || s.Model.SectionFor != wantFor || s.Mode != pluginconfig.ModeLearn {
			t.Errorf("%s: workload %s, section of %v, mode %s", wp.Name, s.Workload, s.Model.SectionFor, s.Mode)
		}
		if size > 64<<10 {
			t.Errorf("%s: pluginConfig of %d bytes, over 64 KiB", wp.Name, size)
		}
		if sel := wp.Spec.Selector.GetMatchLabels(); len(sel) != 1 || sel["app"] != name {
			t.Errorf("%s: selector %v", wp.Name, sel)
		}
		if wp.Spec.Url != tpl.Spec.Url || wp.Spec.Sha256 != tpl.Spec.Sha256 || wp.Spec.Phase != tpl.Spec.Phase || wp.Spec.Priority.GetValue() != tpl.Spec.Priority.GetValue() ||
			wp.Spec.FailStrategy != tpl.Spec.FailStrategy || len(wp.Spec.Match) != 1 {
			t.Errorf("%s does not carry the template's module, phase, priority, failStrategy and match", wp.Name)
		}
		pc := wp.Spec.PluginConfig.AsMap()
		if pc["sample_rate"] != 0.05 {
			t.Errorf("%s lost the template's keys: %v", wp.Name, pc)
		}
		if _, ok := pc["collector_token"]; ok {
			t.Errorf("%s carries a credential: %v", wp.Name, pc)
		}
		if wp.Labels[wasmplugin.LabelTemplate] != "meshward" || wp.Labels[wasmplugin.LabelWorkload] != name+"."+ns {
			t.Errorf("%s labels %v", wp.Name, wp.Labels)
		}
		b, _ := json.Marshal(wp)
		if len(b) > 64<<10+4096 {
			t.Errorf("%s: %d bytes as JSON", wp.Name, len(b))
		}
	}
	if !strings.Contains(logs.String(), `"msg":"wasmplugin: model written","audit":true`) {
		t.Error("no audit line for the writes")
	}
	if !hasEvent(t, env, ns, "ModelApplied", "meshward-reviews", "workload reviews."+ns) {
		t.Error("no ModelApplied Event on meshward-reviews")
	}

	// Again: nothing to write.
	if r, err := sy.Sync(ctx(t)); err != nil || r.Written != 0 || r.Unchanged != 3 {
		t.Fatalf("second Sync: %+v, %v; want nothing written", r, err)
	}

	// A retrain that changes ratings' section only: one write.
	secs2 := map[string][]byte{}
	for k, v := range secs {
		secs2[k] = v
	}
	m, _ := models.DecodeSection(secs["ratings."+ns])
	m.Workloads["ratings."+ns].Routes[0].Count++
	secs2["ratings."+ns], _ = models.Encode(m)
	src.put("v2", secs2)
	src.current = "v2"
	before := plugins(t, ic, ns)
	if r, err := sy.Sync(ctx(t)); err != nil || r.Written != 1 {
		t.Fatalf("Sync after one section changed: %+v, %v; want one write", r, err)
	}
	after := plugins(t, ic, ns)
	for name, wp := range after {
		if changed := wp.ResourceVersion != before[name].ResourceVersion; changed != (name == "meshward-ratings") {
			t.Errorf("%s rewritten: %v", name, changed)
		}
	}

	// A workload gone: its WasmPlugin goes.
	if err := env.Clientset.AppsV1().Deployments(ns).Delete(ctx(t), "details", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if r, err := sy.Sync(ctx(t)); err != nil || r.Deleted != 1 || plugins(t, ic, ns)["meshward-details"] != nil {
		t.Fatalf("Sync after details went: %+v, %v", r, err)
	}

	// A budget the fallback's object does not fit but own sections do:
	// the workload served the fallback is refused by name, the others are
	// written.
	deploy(t, env, ns, "stranger", nil)
	own, _ := json.Marshal(after["meshward-reviews"])
	small := cfg
	small.MaxObjectBytes = len(own) + 2048
	if len(secs[models.GlobalWorkload]) < len(secs["reviews."+ns])+4096 {
		t.Fatalf("the fallback (%d bytes) is not larger than reviews' section (%d): the budget test needs it", len(secs[models.GlobalWorkload]), len(secs["reviews."+ns]))
	}
	ws, err := wasmplugin.New(small, env.Config, log)
	if err != nil {
		t.Fatal(err)
	}
	sy.W = ws
	r, err = sy.Sync(ctx(t))
	if err != nil || len(r.Errors) != 1 || !errors.Is(r.Errors[0], wasmplugin.ErrTooLarge) || !strings.Contains(r.Errors[0].Error(), "workload stranger."+ns) {
		t.Fatalf("over budget: %+v, %v; want ErrTooLarge naming stranger", r, err)
	}
	if plugins(t, ic, ns)["meshward-stranger"] != nil {
		t.Error("a refused WasmPlugin was written")
	}
	if !hasEvent(t, env, ns, "ModelTooLarge", "meshward", "stranger."+ns) {
		t.Error("no ModelTooLarge Event on the template")
	}
	// Refused once, not reported every tick.
	if r, err := sy.Sync(ctx(t)); err != nil || len(r.Errors) != 0 {
		t.Errorf("Sync after a refusal: %+v, %v", r, err)
	}
}

// TestTemplateMustSelectNothing: a WasmPlugin that selects every workload
// of its namespace cannot be a template (each pod would run the filter
// twice); the error says what to change. A missing template says to
// install it.
func TestTemplateMustSelectNothing(t *testing.T) {
	env := kubetest.Shared(t)
	ns := env.Namespace(t, "wpall")
	w, err := wasmplugin.New(wasmplugin.Config{Namespace: ns, Name: "meshward"}, env.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sy := &wasmplugin.Syncer{W: w, Src: &source{}}
	if _, err := sy.Sync(ctx(t)); err == nil || !strings.Contains(err.Error(), "WasmPlugin "+ns+"/meshward not found: install it first") {
		t.Errorf("no template: %v", err)
	}
	installBase(t, env, ns, func(b []byte) []byte {
		return bytes.Replace(b, []byte("  selector:\n    matchLabels:\n      meshward.io/template: \"true\"\n"), nil, 1)
	})
	deploy(t, env, ns, "reviews", nil)
	_, err = sy.Sync(ctx(t))
	if !errors.Is(err, wasmplugin.ErrTemplate) || !strings.Contains(err.Error(), "meshward.io/template") {
		t.Errorf("a namespace-wide template: %v", err)
	}
}

// TestAttachedTemplate: a template attached to a waypoint by targetRefs
// (ambient) serves one workload, the waypoint: meshward writes its section
// into the template itself, owning only the keys it sends, and leaves the
// template as installed before any model.
func TestAttachedTemplate(t *testing.T) {
	env := kubetest.Shared(t)
	ns := env.Namespace(t, "wpambient")
	installBase(t, env, ns, func(b []byte) []byte {
		b = bytes.Replace(b, []byte("  selector:\n    matchLabels:\n      meshward.io/template: \"true\"\n"),
			[]byte("  targetRefs:\n    - group: gateway.networking.k8s.io\n      kind: Gateway\n      name: waypoint\n"), 1)
		return bytes.Replace(b, []byte("  match:\n    - mode: SERVER\n"), nil, 1)
	})
	ic, err := istioclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	w, err := wasmplugin.New(wasmplugin.Config{Namespace: ns, Name: "meshward"}, env.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	src := &source{}
	sy := &wasmplugin.Syncer{W: w, Src: src}
	if r, err := sy.Sync(ctx(t)); err != nil || r.Written != 0 {
		t.Fatalf("before a model: %+v %v", r, err)
	}
	waypoint := "waypoint." + ns
	src.put("v1", map[string][]byte{waypoint: renamed(t, wasmSection(t), waypoint)})
	src.current = "v1"
	if r, err := sy.Sync(ctx(t)); err != nil || r.Written != 1 {
		t.Fatalf("with a model: %+v %v", r, err)
	}
	wp, err := ic.ExtensionsV1alpha1().WasmPlugins(ns).Get(ctx(t), "meshward", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := parsed(t, wp)
	if s.Workload != waypoint || s.Model.SectionFor != waypoint || s.Mode != pluginconfig.ModeLearn {
		t.Errorf("the waypoint's configuration: workload %s, section of %s, mode %s", s.Workload, s.Model.SectionFor, s.Mode)
	}
	var owned []string
	for _, mf := range wp.ManagedFields {
		if mf.Manager == wasmplugin.FieldManager {
			var tree map[string]map[string]map[string]any
			_ = json.Unmarshal(mf.FieldsV1.GetRawBytes(), &tree)
			for k := range tree["f:spec"]["f:pluginConfig"] {
				owned = append(owned, k)
			}
		}
	}
	sort.Strings(owned)
	if strings.Join(owned, " ") != "f:model f:workload" {
		t.Errorf("meshward owns %v of the template's pluginConfig, want model and workload", owned)
	}
	if r, err := sy.Sync(ctx(t)); err != nil || r.Written != 0 {
		t.Errorf("again: %+v %v", r, err)
	}
}

// wasmSection is a small real section.
func wasmSection(t testing.TB) []byte {
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(0, 0)
	tr, _ := models.NewTrainer(cfg)
	for i := 0; i < 100; i++ {
		tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/r/%d", i), Source: "a", Destination: "w"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	b, err := models.EncodeSection(m, "w")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hasEvent polls for an events.k8s.io Event on a WasmPlugin with reason
// whose note contains substr.
func hasEvent(t *testing.T, env *kubetest.Env, ns, reason, object, substr string) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := env.Clientset.EventsV1().Events(ns).List(ctx(t), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Reason == reason && e.Regarding.Name == object && strings.Contains(e.Note, substr) && e.Regarding.Kind == "WasmPlugin" && e.ReportingController == "meshward.io/control-plane" {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	return false
}
