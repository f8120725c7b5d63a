package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/detect"
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

// hostile are principals and destinations a forged record can carry.
var hostile = []string{
	"spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/*/sa/web", "*", "spiffe://cluster.local/ns/shop/sa/web*",
	"spiffe://cluster.local/ns/shop/sa/../../x", "spiffe://cluster.local/ns/shop/sa/w%2A", "spiffe://cluster.local/ns/shop/sa//",
	"spiffe://cluster.local/ns/shop/sa/web/extra", "*.shop", "cart.*", "cart.shop*", "a b.shop", "", ".shop", "cart.",
}

// checkNoWildcard fails when any principal or selector of a policy is not
// exact.
func checkNoWildcard(t *testing.T, d decide.Decision) {
	t.Helper()
	aps, err := Istio(d)
	if err == nil {
		for _, ap := range aps {
			for _, r := range ap.Spec.Rules {
				for _, f := range r.From {
					for _, p := range f.Source.Principals {
						if strings.ContainsAny(p, "*%") || decide.ValidPrincipal("spiffe://"+p) != nil {
							t.Errorf("AuthorizationPolicy %s holds principal %q", ap.Name, p)
						}
					}
				}
			}
			for k, v := range ap.Spec.Selector.MatchLabels {
				if strings.Contains(v, "*") || v == "" {
					t.Errorf("AuthorizationPolicy %s selects %s=%q", ap.Name, k, v)
				}
			}
		}
	}
	per, err := RBAC(d)
	if err == nil {
		for w, f := range per {
			b, _ := protojson.Marshal(f)
			if strings.Contains(string(b), "*") || strings.Contains(w, "*") {
				t.Errorf("RBAC for %s holds a wildcard: %s", w, b)
			}
		}
	}
}

// TestNoPolicyHoldsAWildcard: whatever principal and destinations an
// incident names, decide and both translators never yield a policy with a
// wildcard or a path trick in it — the translators refuse a decision that
// did not come from decide, too.
func TestNoPolicyHoldsAWildcard(t *testing.T) {
	good := "spiffe://cluster.local/ns/shop/sa/web"
	for _, p := range append(hostile, good) {
		for _, dst := range append(hostile, "cart.shop") {
			inc := &detect.Incident{ID: "x-00000001", Principal: p, Signals: []string{"new_destinations=2"},
				NewEdges: []detect.Edge{{Destination: dst}, {Destination: "users.shop"}}}
			d := decide.Decide(inc, decide.DefaultRules(), 0, time.Unix(0, 0))
			if p != good && d.Suppressed == "" {
				t.Errorf("a decision stands for %q", p)
			}
			checkNoWildcard(t, d)
			// A decision made by hand, bypassing decide's rails.
			forged := decide.Decision{ID: "f-1", Principal: p, TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "*",
				Deny: []decide.Target{{Workload: dst, Name: "*", Namespace: "shop"}}, Mode: decide.Enforce}
			if _, err := Istio(forged); err == nil {
				t.Errorf("Istio translated a forged decision for %q → %q", p, dst)
			}
			if _, err := RBAC(forged); err == nil {
				t.Errorf("RBAC translated a forged decision for %q → %q", p, dst)
			}
		}
	}
}

func FuzzNoPolicyHoldsAWildcard(f *testing.F) {
	for _, h := range hostile {
		f.Add(h, "cart.shop")
		f.Add("spiffe://cluster.local/ns/shop/sa/web", h)
	}
	f.Fuzz(func(t *testing.T, principal, dst string) {
		inc := &detect.Incident{ID: "x-00000001", Principal: principal, Signals: []string{"s"}, NewEdges: []detect.Edge{{Destination: dst}}}
		checkNoWildcard(t, decide.Decide(inc, decide.DefaultRules(), 0, time.Unix(0, 0)))
	})
}
