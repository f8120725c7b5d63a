package manifests

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/kubetest"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

// kustomizations are every installable directory under manifests/.
var kustomizations = []string{
	"istio/base",
	"istio/overlays/monitor",
	"istio/overlays/enforce",
	"istio/overlays/ambient",
	"istio-ecds",
}

// workdir copies manifests/ into a temporary directory.
func workdir(t *testing.T) string {
	dir := t.TempDir()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(path)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, path), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// cluster is the shared API server with the namespaces the manifests use
// (a dry run cannot create a namespace and then fill it).
func cluster(t *testing.T) *kubetest.Env {
	env := kubetest.Shared(t)
	env.EnsureNamespaces(t, "meshward-system", "default")
	return env
}

// dryRun applies a kustomization with the API server's validation (strict
// field validation, the CRDs' schemas and CEL rules), writing nothing.
func dryRun(env *kubetest.Env, dir string, serverSide bool) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"apply", "--dry-run=server", "--validate=strict", "-k", dir}
	if serverSide {
		args = append(args, "--server-side", "--field-manager=meshward-install")
	}
	return env.RunKubectl(ctx, args...)
}

// Every kustomization applies cleanly, client-side and server-side (the
// README recommends --server-side: a model in pluginConfig can exceed the
// last-applied annotation's size limit).
func TestManifestsApplyOnARealAPIServer(t *testing.T) {
	env := cluster(t)
	dir := workdir(t)
	for _, k := range kustomizations {
		for _, ss := range []bool{false, true} {
			out, err := dryRun(env, filepath.Join(dir, k), ss)
			if err != nil {
				t.Errorf("%s (server-side %v): %v", k, ss, err)
				continue
			}
			if !strings.Contains(out, "(server dry run)") {
				t.Errorf("%s: not a server dry run? %s", k, out)
			}
		}
	}
}

// The overlays do what they say: the rendered WasmPlugin is a template
// that selects no workload (or, ambient, is attached to the waypoint), and
// its plugin configuration, with a workload and its section as the control
// plane adds them, is one the filter accepts in the overlay's mode; the
// control plane is told to write from it.
func TestOverlaysRenderTheirMode(t *testing.T) {
	env := cluster(t)
	dir := workdir(t)
	for k, mode := range map[string]pluginconfig.Mode{"istio/base": pluginconfig.ModeLearn, "istio/overlays/monitor": pluginconfig.ModeMonitor, "istio/overlays/enforce": pluginconfig.ModeEnforce, "istio/overlays/ambient": pluginconfig.ModeLearn} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := env.RunKubectl(ctx, "kustomize", filepath.Join(dir, k))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(strings.NewReader(out))
		found := false
		for {
			var obj struct {
				Kind     string `yaml:"kind"`
				Metadata struct {
					Name string `yaml:"name"`
				} `yaml:"metadata"`
				Spec struct {
					PluginConfig map[string]any `yaml:"pluginConfig"`
					TargetRefs   []any          `yaml:"targetRefs"`
					Match        []any          `yaml:"match"`
					Selector     struct {
						MatchLabels map[string]string `yaml:"matchLabels"`
					} `yaml:"selector"`
					Template struct {
						Spec struct {
							Containers []struct {
								Args []string `yaml:"args"`
							} `yaml:"containers"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			if err := dec.Decode(&obj); err != nil {
				break
			}
			if obj.Kind == "Deployment" && obj.Metadata.Name == "meshward" {
				if args := strings.Join(obj.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, "-wasmplugin=default/meshward") {
					t.Errorf("%s: the control plane is not told to write the WasmPlugins (args %s)", k, args)
				}
			}
			if obj.Kind != "WasmPlugin" {
				continue
			}
			found = true
			pc := map[string]any{"workload": "reviews.default", "model": base64.StdEncoding.EncodeToString(testModel(t))}
			for key, v := range obj.Spec.PluginConfig {
				if key != "workload" && key != "model" {
					pc[key] = v
				}
			}
			doc, _ := json.Marshal(pc)
			s, err := pluginconfig.Parse(doc, "")
			if err != nil {
				t.Errorf("%s: the filter would refuse the template's pluginConfig with a section in it: %v", k, err)
				continue
			}
			if s.Mode != mode {
				t.Errorf("%s: mode %s; want mode %s", k, s.Mode, mode)
			}
			ambient := k == "istio/overlays/ambient"
			if ambient != (len(obj.Spec.TargetRefs) == 1) || ambient == (len(obj.Spec.Match) == 1) {
				t.Errorf("%s: targetRefs %v, match %v", k, obj.Spec.TargetRefs, obj.Spec.Match)
			}
			if sel := obj.Spec.Selector.MatchLabels; ambient != (len(sel) == 0) || !ambient && (len(sel) != 1 || sel["meshward.io/template"] != "true") {
				t.Errorf("%s: the template's selector %v; want none (ambient) or the one no pod carries", k, sel)
			}
		}
		if !found {
			t.Errorf("%s renders no WasmPlugin", k)
		}
	}
}

// A broken manifest fails, with the API server's own message: a value the
// WasmPlugin schema does not allow, a field no schema has (strict
// validation), a PodMonitor field typo.
func TestBrokenManifestsFail(t *testing.T) {
	env := cluster(t)
	for _, c := range []struct {
		name, file, old, new, want string
	}{
		{"enum value", "istio/base/wasmplugin.yaml", "phase: STATS", "phase: STAT", `Unsupported value: "STAT"`},
		{"unknown field", "istio/base/wasmplugin.yaml", "failStrategy: FAIL_OPEN", "failStrategy: FAIL_OPEN\n  failStrategyy: FAIL_OPEN", `unknown field "spec.failStrategyy"`},
		{"PodMonitor typo", "monitoring/podmonitor.yaml", "honorLabels: true", "honourLabels: true", `unknown field "spec.podMetricsEndpoints[0].honourLabels"`},
		{"Deployment without its image", "istio/controlplane/controlplane.yaml", "          image: ghcr.io/meshward/meshward\n", "", "spec.template.spec.containers[0].image: Required value"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := workdir(t)
			path := filepath.Join(dir, c.file)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			broken := strings.Replace(string(b), c.old, c.new, 1)
			if broken == string(b) {
				t.Fatalf("%q not found in %s: the test no longer breaks anything", c.old, c.file)
			}
			if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := dryRun(env, filepath.Join(dir, "istio/base"), false)
			if err == nil {
				t.Fatalf("the broken manifest applied: %s", out)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error does not carry the server's message %q:\n%v", c.want, err)
			}
		})
	}
}
