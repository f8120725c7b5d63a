package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	sigsyaml "sigs.k8s.io/yaml"

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

// TestIstioRoundTrip reads the YAML back into client-go's type (strictly,
// so a misspelt field fails) and checks the apply configuration carries the
// same object.
func TestIstioRoundTrip(t *testing.T) {
	raw, err := os.ReadFile("testdata/dry-run.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d decide.Decision
	if err := yaml.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	aps, err := Istio(d)
	if err != nil {
		t.Fatal(err)
	}
	out, err := YAML(aps)
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(out), "---\n")
	if len(docs) != len(aps) {
		t.Fatalf("%d documents for %d policies", len(docs), len(aps))
	}
	for i, doc := range docs {
		var back securityv1.AuthorizationPolicy
		if err := sigsyaml.UnmarshalStrict([]byte(doc), &back); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if !proto.Equal(&back.Spec, &aps[i].Spec) || back.Name != aps[i].Name || back.Annotations[AnnotationDryRun] != "true" {
			t.Errorf("document %d does not read back as the policy:\n%s", i, doc)
		}
		ac, err := json.Marshal(ApplyConfig(aps[i]))
		if err != nil {
			t.Fatal(err)
		}
		var fromApply securityv1.AuthorizationPolicy
		if err := json.Unmarshal(ac, &fromApply); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&fromApply.Spec, &aps[i].Spec) || fromApply.Labels[LabelManagedBy] != ManagedBy || fromApply.Kind != "AuthorizationPolicy" {
			t.Errorf("apply configuration %d differs: %s", i, ac)
		}
	}
}

// TestNameUnique: long target names are cut, but never to the same name.
func TestNameUnique(t *testing.T) {
	id := "ts-travel-plan-service-0a1b2c3d"
	a, b := Name(id, "ts-travel-plan-service-with-a-long-name-one"), Name(id, "ts-travel-plan-service-with-a-long-name-two")
	if a == b || len(a) > 63 || len(b) > 63 {
		t.Errorf("names %q and %q: want distinct, ≤ 63 characters", a, b)
	}
	if n := Name("x", "y"); n != "meshward-quarantine-x-y" {
		t.Errorf("short name %q", n)
	}
}
