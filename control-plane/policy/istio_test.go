package policy

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/control-plane/decide"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestIstioGolden translates every testdata/*.in.yaml decision and compares
// the policies with *.out.yaml (regenerate with -update).
func TestIstioGolden(t *testing.T) {
	ins, _ := filepath.Glob("testdata/*.in.yaml")
	if len(ins) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, in := range ins {
		t.Run(filepath.Base(in), func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var d decide.Decision
			if err := yaml.Unmarshal(raw, &d); err != nil {
				t.Fatal(err)
			}
			var got []byte
			aps, err := Istio(d)
			if err != nil {
				got = []byte("error: " + err.Error() + "\n")
			} else if got, err = YAML(aps); err != nil {
				t.Fatal(err)
			}
			out := strings.TrimSuffix(in, ".in.yaml") + ".out.yaml"
			if *update {
				if err := os.WriteFile(out, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s:\n--- got\n%s--- want\n%s", in, out, got, want)
			}
		})
	}
}
