package manifests

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/manifests/internal/monitoring"
)

var update = flag.Bool("update", false, "rewrite the generated files (as make manifests does)")

// The committed dashboard and rules are what the generator writes now.
func TestGeneratedMonitoringIsCurrent(t *testing.T) {
	dash, err := monitoring.DashboardJSON()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := monitoring.PrometheusRuleYAML()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{"monitoring/meshward-dashboard.json": dash, "monitoring/prometheusrule.yaml": rules} {
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `make manifests` (or go test ./manifests -update)", path)
		}
	}
}

// filterMetrics reads the metric names the filter defines, from its
// source: every proxywasm.Define*Metric call's argument, resolved through
// the package's string constants. Histograms expose _bucket, _sum and
// _count in Envoy's Prometheus output.
func filterMetrics(t *testing.T) map[string]bool {
	names, _ := filterSource(t)
	return names
}

// filterSource returns the filter's metric names and its string constants.
func filterSource(t *testing.T) (map[string]bool, map[string]string) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("../filter/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("the filter's sources: %v", err)
	}
	consts := map[string]string{}
	var calls []*ast.CallExpr
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				for i, name := range n.Names {
					if i < len(n.Values) {
						if lit, ok := n.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							consts[name.Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && strings.HasPrefix(sel.Sel.Name, "Define") && strings.HasSuffix(sel.Sel.Name, "Metric") {
					calls = append(calls, n)
				}
			}
			return true
		})
	}
	names := map[string]bool{}
	for _, c := range calls {
		fn := c.Fun.(*ast.SelectorExpr).Sel.Name
		var name string
		switch a := c.Args[0].(type) {
		case *ast.Ident:
			name = consts[a.Name]
		case *ast.BasicLit:
			name, _ = strconv.Unquote(a.Value)
		}
		if name == "" {
			t.Fatalf("%s: cannot resolve the metric name of %s", fset.Position(c.Pos()), fn)
		}
		if fn == "DefineHistogramMetric" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
			continue
		}
		names[name] = true
	}
	if len(names) < 5 {
		t.Fatalf("found only %v in the filter's sources", names)
	}
	return names, consts
}

// istioMetrics are Istio's standard metrics the dashboard reads (they are
// Istio's, not meshward's), with the labels the manifests add to them.
var istioMetrics = map[string]bool{"istio_requests_total": true}

var (
	braces    = regexp.MustCompile(`\{[^}]*\}`)
	grouping  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	ranges    = regexp.MustCompile(`\[[^\]]*\]`)
	functions = regexp.MustCompile(`\b[a-zA-Z_]+\s*\(`)
	ident     = regexp.MustCompile(`\b[a-zA-Z_:][a-zA-Z0-9_:]*\b`)
	verdicts  = regexp.MustCompile(`meshward_verdict=~?"([^"]+)"`)
)

var (
	selectorLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	groupLabels   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
)

// labelsOf returns the label names a PromQL expression selects on or
// groups by.
func labelsOf(expr string) []string {
	var out []string
	for _, sel := range braces.FindAllString(expr, -1) {
		for _, m := range selectorLabel.FindAllStringSubmatch(sel, -1) {
			out = append(out, m[1])
		}
	}
	for _, g := range groupLabels.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

// istioStandardLabels are the labels of Istio's standard request metrics
// (istio.io/latest/docs/reference/config/metrics); the Telemetry adds its tags.
var istioStandardLabels = []string{"reporter", "source_workload", "source_workload_namespace", "source_principal",
	"source_app", "source_version", "source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster", "request_protocol",
	"response_code", "grpc_response_status", "response_flags", "connection_security_policy"}

// istioLabels are the labels istio_requests_total has with the manifests'
// Telemetry: Istio's standard ones and every tag the Telemetry adds.
func istioLabels(t *testing.T) []string {
	var tel struct {
		Spec struct {
			Metrics []struct {
				Overrides []struct {
					TagOverrides map[string]any `yaml:"tagOverrides"`
				} `yaml:"overrides"`
			} `yaml:"metrics"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(read(t, "istio/telemetry/telemetry.yaml"), &tel); err != nil {
		t.Fatal(err)
	}
	out := append([]string{}, istioStandardLabels...)
	for _, m := range tel.Spec.Metrics {
		for _, o := range m.Overrides {
			for tag := range o.TagOverrides {
				out = append(out, tag)
			}
		}
	}
	return out
}

// podMonitorLabels are the labels the PodMonitor gives the filter's
// metrics (which have none of their own).
func podMonitorLabels(t *testing.T) []string {
	var pm struct {
		Spec struct {
			Endpoints []struct {
				Relabelings []struct {
					TargetLabel string `yaml:"targetLabel"`
				} `yaml:"relabelings"`
			} `yaml:"podMetricsEndpoints"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(read(t, "monitoring/podmonitor.yaml"), &pm); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range pm.Spec.Endpoints {
		for _, r := range e.Relabelings {
			out = append(out, r.TargetLabel)
		}
	}
	if len(out) == 0 {
		t.Fatal("the PodMonitor gives the filter's metrics no labels")
	}
	return out
}

// balanced checks brackets and quotes pair up (the one syntax check done
// here: Prometheus's own parser is not among this module's dependencies).
func balanced(expr string) error {
	var stack []rune
	pair := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inQuote := false
	for _, r := range expr {
		switch {
		case r == '"':
			inQuote = !inQuote
		case inQuote:
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case pair[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pair[r] {
				return fmt.Errorf("unbalanced %q", r)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inQuote || len(stack) > 0 {
		return fmt.Errorf("unclosed brackets %q (open quote: %v)", string(stack), inQuote)
	}
	return nil
}

// metricsOf returns the metric names a PromQL expression reads.
func metricsOf(expr string) []string {
	e := braces.ReplaceAllString(expr, " ")
	e = grouping.ReplaceAllString(e, " ")
	e = ranges.ReplaceAllString(e, " ")
	e = functions.ReplaceAllString(e, " ")
	var out []string
	for _, id := range ident.FindAllString(e, -1) {
		switch id {
		case "and", "or", "unless", "bool", "offset":
			continue
		}
		out = append(out, id)
	}
	return out
}

// Every metric the dashboard and the alert rules query is one the filter
// or the control plane really exports (or Istio's standard request
// metric), and every verdict they select is one the Telemetry produces.
func TestQueriedMetricsExist(t *testing.T) {
	exported := filterMetrics(t)
	filterNames := filterMetrics(t)
	cfg := server.DefaultConfig()
	cfg.Collector.Identity = "xfcc"
	cfg.Auth.Token = []byte("a-token-only-to-construct-the-server")
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	cpLabels := s.MetricLabels()
	for n := range cpLabels {
		exported[n] = true
	}
	for n := range istioMetrics {
		exported[n] = true
	}
	telemetry := string(read(t, "istio/telemetry/telemetry.yaml"))
	// The Telemetry tells a denial by the filter from the response details
	// the filter gives its 403.
	if _, consts := filterSource(t); consts["denyDetails"] == "" || !strings.Contains(telemetry, "'"+consts["denyDetails"]+"'") {
		t.Errorf("istio/telemetry/telemetry.yaml does not match the filter's denial details %q", consts["denyDetails"])
	}
	used := map[string]bool{}
	for _, q := range monitoring.Queries() {
		if err := balanced(q); err != nil {
			t.Errorf("%q: %v", q, err)
		}
		ms := metricsOf(q)
		if len(ms) == 0 {
			t.Errorf("no metric found in %q", q)
		}
		for _, m := range ms {
			used[m] = true
			if !exported[m] {
				t.Errorf("%q queries %s, which neither the filter nor the control plane exports", q, m)
			}
		}
		// Every label the query selects or groups by is one its metrics have.
		have := map[string]bool{}
		for _, m := range ms {
			_, isCP := cpLabels[m]
			switch {
			case isCP:
				for _, l := range cpLabels[m] {
					have[l] = true
				}
			case filterNames[m]:
				for _, l := range podMonitorLabels(t) {
					have[l] = true
				}
				if strings.HasSuffix(m, "_bucket") {
					have["le"] = true
				}
			case istioMetrics[m]:
				for _, l := range istioLabels(t) {
					have[l] = true
				}
			}
		}
		for _, l := range labelsOf(q) {
			if !have[l] {
				t.Errorf("%q uses label %s, which none of %v has", q, l, ms)
			}
		}
		for _, v := range verdicts.FindAllStringSubmatch(q, -1) {
			for _, alt := range strings.Split(v[1], "|") {
				if !strings.Contains(telemetry, "'"+alt+"'") {
					t.Errorf("%q selects meshward_verdict %q, which istio/telemetry/telemetry.yaml never sets", q, alt)
				}
			}
		}
	}
	// The dashboard covers what the filter exports.
	var missing []string
	for m := range filterMetrics(t) {
		if !used[m] && !strings.HasSuffix(m, "_sum") && !strings.HasSuffix(m, "_count") {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("filter metrics on no panel: %v", missing)
	}
}

// The metric finder itself: it finds what a query reads, and a query on a
// made-up metric is caught.
func TestMetricsOf(t *testing.T) {
	got := metricsOf(`histogram_quantile(0.99, sum by (le, destination_workload) (rate(meshward_score_permille_bucket{x="a"}[5m]))) / max(meshward_redis_up) > 0`)
	if strings.Join(got, ",") != "meshward_score_permille_bucket,meshward_redis_up" {
		t.Fatalf("metricsOf: %v", got)
	}
	if balanced(`sum(rate(x{a="(b"}[5m]))`) != nil || balanced(`sum(rate(x[5m])`) == nil || balanced(`x{a="b}`) == nil {
		t.Fatal("balanced does not tell balanced expressions from broken ones")
	}
	exported := filterMetrics(t)
	if exported["meshward_flaged_total"] || !exported["meshward_flagged_total"] {
		t.Fatal("the filter's metric names were not read from its sources")
	}
}
