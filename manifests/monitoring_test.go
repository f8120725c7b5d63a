package manifests

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/filter/plugin"
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

// filterMetrics returns the metric names the filter defines, as Envoy
// exposes them: histograms as _bucket, _sum and _count.
func filterMetrics(t *testing.T) map[string]bool {
	names := map[string]bool{}
	for _, m := range plugin.Metrics {
		if m.Kind == plugin.Histogram {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[m.Name+s] = true
			}
			continue
		}
		names[m.Name] = true
	}
	if len(names) < 5 {
		t.Fatalf("the filter lists only %v", names)
	}
	return names
}

// istioMetrics are Istio's standard metrics the dashboard reads (they are
// Istio's, not meshward's), with the labels the manifests add to them.
var istioMetrics = map[string]bool{"istio_requests_total": true}

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

// query is what a PromQL expression reads, from the syntax tree
// Prometheus's own parser makes of it.
type query struct {
	expr parser.Expr
	// selectors are its series selectors (in matrix selectors too).
	selectors []*parser.VectorSelector
}

// parseQuery parses a PromQL expression; a syntax error names the query.
func parseQuery(q string) (query, error) {
	expr, err := parser.ParseExpr(q)
	if err != nil {
		return query{}, fmt.Errorf("%q does not parse: %w", q, err)
	}
	return query{expr: expr, selectors: selectorsIn(expr)}, nil
}

// selectorsIn returns the series selectors under a node.
func selectorsIn(n parser.Node) []*parser.VectorSelector {
	var out []*parser.VectorSelector
	parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

// metrics returns the metric names a query reads (one per selector; empty
// for a selector that names none).
func (q query) metrics() []string {
	var out []string
	for _, vs := range q.selectors {
		out = append(out, vs.Name)
	}
	return out
}

// matchers returns the label matchers of every selector, the metric name's
// own left out.
func (q query) matchers() []*labels.Matcher {
	var out []*labels.Matcher
	for _, vs := range q.selectors {
		for _, m := range vs.LabelMatchers {
			if m.Name != model.MetricNameLabel {
				out = append(out, m)
			}
		}
	}
	return out
}

// labelUse is a label a query groups by or matches on, and the selectors
// below the node that names it: the label must be one their series have.
type labelUse struct {
	label, where string
	selectors    []*parser.VectorSelector
}

// labelUses returns the labels of every by/without grouping and every
// on/ignoring/group_left/group_right vector matching (each side of a
// matching must have the label), and of every matcher (its own selector).
func (q query) labelUses() []labelUse {
	var out []labelUse
	for _, vs := range q.selectors {
		for _, m := range vs.LabelMatchers {
			if m.Name != model.MetricNameLabel {
				out = append(out, labelUse{m.Name, "selector " + vs.String(), []*parser.VectorSelector{vs}})
			}
		}
	}
	parser.Inspect(q.expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.AggregateExpr:
			for _, l := range n.Grouping {
				out = append(out, labelUse{l, "grouping of " + n.Op.String(), selectorsIn(n.Expr)})
			}
		case *parser.BinaryExpr:
			if vm := n.VectorMatching; vm != nil {
				for _, side := range []parser.Expr{n.LHS, n.RHS} {
					for _, l := range vm.MatchingLabels {
						out = append(out, labelUse{l, "vector matching of " + n.Op.String(), selectorsIn(side)})
					}
				}
				// group_left/group_right copy these from the "one" side.
				one := n.RHS
				if vm.Card == parser.CardOneToMany {
					one = n.LHS
				}
				for _, l := range vm.Include {
					out = append(out, labelUse{l, "group modifier of " + n.Op.String(), selectorsIn(one)})
				}
			}
		}
		return nil
	})
	return out
}

// verdicts returns the verdicts the Telemetry's expression can give
// (its quoted values).
func verdicts(t *testing.T) map[string]bool {
	out := map[string]bool{}
	// The results of the CEL expression's branches are its quoted
	// literals that are not compared against.
	for _, lit := range celResult.FindAllStringSubmatch(telemetryExpression(t), -1) {
		out[lit[1]] = true
	}
	if len(out) < 2 {
		t.Fatalf("istio/telemetry/telemetry.yaml gives meshward_verdict only %v", out)
	}
	return out
}

// celResult finds a branch result of a CEL conditional: a quoted literal
// after ? or :.
var celResult = regexp.MustCompile(`[?:]\s*\(?\s*'([a-z_]+)'`)

// Every metric the dashboard and the alert rules query is one the filter
// or the control plane really exports (or Istio's standard request
// metric), every label they select on, group by or match on is one those
// metrics have, and every verdict they select is one the Telemetry gives.
func TestQueriedMetricsExist(t *testing.T) {
	exported := filterMetrics(t)
	filterNames := filterMetrics(t)
	cpLabels := server.MetricLabels()
	for n := range cpLabels {
		exported[n] = true
	}
	for n := range istioMetrics {
		exported[n] = true
	}
	telemetry := string(read(t, "istio/telemetry/telemetry.yaml"))
	// The Telemetry tells a denial by the filter from the response details
	// the filter gives its 403.
	if !strings.Contains(telemetry, "'"+plugin.DenyDetails+"'") {
		t.Errorf("istio/telemetry/telemetry.yaml does not match the filter's denial details %q", plugin.DenyDetails)
	}
	given := verdicts(t)
	pmLabels, istio := podMonitorLabels(t), istioLabels(t)
	// labelsOf is the labels a metric's series have once scraped.
	labelsOf := func(m string) map[string]bool {
		have := map[string]bool{}
		var ls []string
		switch {
		case filterNames[m]:
			ls = pmLabels
			if strings.HasSuffix(m, "_bucket") {
				ls = append(ls, "le")
			}
		case istioMetrics[m]:
			ls = istio
		default:
			ls = cpLabels[m]
		}
		for _, l := range ls {
			have[l] = true
		}
		return have
	}
	used := map[string]bool{}
	for _, q := range monitoring.Queries() {
		pq, err := parseQuery(q)
		if err != nil {
			t.Error(err)
			continue
		}
		ms := pq.metrics()
		if len(ms) == 0 {
			t.Errorf("no metric found in %q", q)
		}
		for _, m := range ms {
			used[m] = true
			if !exported[m] {
				t.Errorf("%q queries %q, which neither the filter nor the control plane exports", q, m)
			}
		}
		for _, u := range pq.labelUses() {
			for _, vs := range u.selectors {
				if !labelsOf(vs.Name)[u.label] {
					t.Errorf("%q: the %s uses label %s, which %s does not have", q, u.where, u.label, vs.Name)
				}
			}
		}
		for _, m := range pq.matchers() {
			if m.Name != "meshward_verdict" {
				continue
			}
			// Each alternative must be a verdict the Telemetry gives (a
			// typo in one would match nothing, silently).
			alts := []string{m.Value}
			if m.Type == labels.MatchRegexp || m.Type == labels.MatchNotRegexp {
				alts = strings.Split(m.Value, "|")
			}
			for _, alt := range alts {
				if !given[alt] {
					t.Errorf("%q selects meshward_verdict %q, which istio/telemetry/telemetry.yaml never gives (it gives %v)", q, alt, sortedKeys(given))
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

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The query reader itself: it finds what a query reads, groups and matches
// by, and refuses a query that does not parse, naming it.
func TestParseQuery(t *testing.T) {
	q, err := parseQuery(`histogram_quantile(0.99, sum by (le, destination_workload) (rate(meshward_score_permille_bucket{x="a"}[5m]))) / on (destination_workload) group_left (sha256) max(meshward_redis_up) > 0`)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(q.metrics(), ","); got != "meshward_score_permille_bucket,meshward_redis_up" {
		t.Errorf("metrics: %s", got)
	}
	var uses []string
	for _, u := range q.labelUses() {
		var names []string
		for _, vs := range u.selectors {
			names = append(names, vs.Name)
		}
		uses = append(uses, u.label+"@"+strings.Join(names, "+"))
	}
	sort.Strings(uses)
	want := "destination_workload@meshward_redis_up,destination_workload@meshward_score_permille_bucket,destination_workload@meshward_score_permille_bucket,le@meshward_score_permille_bucket,sha256@meshward_redis_up,x@meshward_score_permille_bucket"
	if got := strings.Join(uses, ","); got != want {
		t.Errorf("label uses:\n got %s\nwant %s", got, want)
	}
	for _, bad := range []string{`sum(rate(x[5m])`, `x{a="b}`, `sum by (a) rate(x[5m])`, `rate(x)`} {
		if _, err := parseQuery(bad); err == nil || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := parseQuery(`sum(rate(x{a="(b"}[5m]))`); err != nil {
		t.Errorf("a bracket inside a string: %v", err)
	}
	exported := filterMetrics(t)
	if exported["meshward_flaged_total"] || !exported["meshward_flagged_total"] {
		t.Fatal("the filter's metric names were not read from its sources")
	}
	if v := verdicts(t); !v["denied"] || !v["flagged"] || !v["quarantined"] || v["meshward_denied"] {
		t.Errorf("verdicts read from the Telemetry: %v", v)
	}
}
