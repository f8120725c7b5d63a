package manifests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/manifests/internal/pin"
)

// builtWasm is the compiled filter make test builds (MESHWARD_WASM), or
// build/meshward.wasm.
func builtWasm(t *testing.T) []byte {
	path := os.Getenv("MESHWARD_WASM")
	if path == "" {
		path = "../build/meshward.wasm"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the compiled filter: %v (make wasm builds it)", err)
	}
	return b
}

// The digests the WasmPlugin and the EnvoyFilter pin are those of the
// filter as built now (the image is built reproducibly from the module).
func TestPinnedDigestsMatchTheBuild(t *testing.T) {
	d, err := pin.For(builtWasm(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := pin.Check(".", d); err != nil {
		t.Fatal(err)
	}
	// And a stale pin is caught, naming the file and the fix.
	dir := t.TempDir()
	for _, f := range []string{pin.WasmPluginFile, pin.EnvoyFilterFile} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), read(t, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stale := d
	stale.Image = strings.Repeat("ab", 32)
	if err := pin.Write(dir, stale); err != nil {
		t.Fatal(err)
	}
	err = pin.Check(dir, d)
	if err == nil || !strings.Contains(err.Error(), pin.WasmPluginFile) || !strings.Contains(err.Error(), "make manifests") {
		t.Fatalf("a stale WasmPlugin digest: %v", err)
	}
	if err := pin.Write(dir, d); err != nil {
		t.Fatal(err)
	}
	if err := pin.Check(dir, d); err != nil {
		t.Fatalf("after rewriting: %v", err)
	}
}

// The WasmPlugin's pluginConfig is a configuration the filter accepts.
func TestWasmPluginConfigIsAccepted(t *testing.T) {
	var wp struct {
		Spec struct {
			PluginConfig map[string]any `yaml:"pluginConfig"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(read(t, pin.WasmPluginFile), &wp); err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(wp.Spec.PluginConfig)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pluginconfig.Parse(doc, "reviews.default")
	if err != nil {
		t.Fatalf("the filter would refuse the WasmPlugin's pluginConfig: %v", err)
	}
	if s.Mode != pluginconfig.ModeLearn || !strings.HasPrefix(s.CollectorCluster, "outbound|9090||meshward.meshward-system.") {
		t.Fatalf("base: mode %s, collector %q", s.Mode, s.CollectorCluster)
	}
}

func yamlUnmarshal(b []byte, v any) error { return yaml.Unmarshal(b, v) }
