package manifests

import (
	"testing"

	"github.com/google/cel-go/cel"
	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/policy"
	"github.com/meshward/meshward/filter/plugin"
)

// telemetryExpression reads the meshward_verdict tag expression.
func telemetryExpression(t *testing.T) string {
	var tel struct {
		Spec struct {
			Metrics []struct {
				Overrides []struct {
					TagOverrides map[string]struct {
						Value string `yaml:"value"`
					} `yaml:"tagOverrides"`
				} `yaml:"overrides"`
			} `yaml:"metrics"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(read(t, "istio/telemetry/telemetry.yaml"), &tel); err != nil {
		t.Fatal(err)
	}
	expr := tel.Spec.Metrics[0].Overrides[0].TagOverrides["meshward_verdict"].Value
	if expr == "" {
		t.Fatal("no meshward_verdict tag in istio/telemetry/telemetry.yaml")
	}
	return expr
}

// The verdict tag is CEL that Istio evaluates over Envoy's attributes.
// Compiled and run here with CEL's standard semantics (what Envoy's CEL
// follows) on the attributes each case produces, it gives each verdict.
func TestTelemetryVerdictExpression(t *testing.T) {
	env, err := cel.NewEnv(
		cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("response", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		t.Fatal(err)
	}
	ast, iss := env.Compile(telemetryExpression(t))
	if iss.Err() != nil {
		t.Fatalf("the meshward_verdict expression does not compile: %v", iss.Err())
	}
	prg, err := env.Program(ast)
	if err != nil {
		t.Fatal(err)
	}
	// A quarantine policy as the translator names it; Istio's RBAC filter
	// names the policy that denied a request in the response details.
	aps, err := policy.Istio(decide.Decision{ID: "inc-1", Principal: "spiffe://cluster.local/ns/shop/sa/cart",
		Namespace: "shop", ServiceAccount: "cart", Mode: decide.Enforce,
		Deny: []decide.Target{{Workload: "reviews.default", Name: "reviews", Namespace: "default"}}})
	if err != nil || len(aps) != 1 {
		t.Fatalf("translating a decision: %v, %d policies", err, len(aps))
	}
	quarantine := "rbac_access_denied_matched_policy[ns[default]-policy[" + aps[0].Name + "]-rule[0]]"
	for _, c := range []struct {
		details string
		headers map[string]string
		want    string
	}{
		{quarantine, nil, "quarantined"},
		{"rbac_access_denied_matched_policy[ns[default]-policy[deny-all]-rule[0]]", nil, "passed"},
		{plugin.DenyDetails, map[string]string{"x-meshward-reason": "new_caller"}, "denied"},
		{"via_upstream", map[string]string{"x-meshward-reason": "new_caller", "x-meshward-score": "0.910"}, "flagged"},
		{"via_upstream", map[string]string{"x-meshward-score": "0.010"}, "passed"},
	} {
		headers := map[string]any{}
		for k, v := range c.headers {
			headers[k] = v
		}
		out, _, err := prg.Eval(map[string]any{
			"request":  map[string]any{"headers": headers},
			"response": map[string]any{"code_details": c.details},
		})
		if err != nil {
			t.Fatalf("%s: %v", c.details, err)
		}
		if out.Value() != c.want {
			t.Errorf("details %q, headers %v: verdict %v, want %s", c.details, c.headers, out.Value(), c.want)
		}
	}
}
