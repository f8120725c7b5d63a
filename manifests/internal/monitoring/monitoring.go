// Package monitoring is meshward's dashboard and alert rules as code: the
// Grafana dashboard (github.com/grafana/grafana-foundation-sdk/go) and the
// Prometheus Operator PrometheusRule, generated into manifests/monitoring by
// `make manifests`. Every query is kept in one list (Queries) so a test can
// check that each metric it names is one the filter or the control plane
// really exports.
package monitoring

import (
	"encoding/json"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
	"gopkg.in/yaml.v3"
)

// UID is the dashboard's stable identifier.
const UID = "meshward"

// query is one PromQL expression with its legend.
type query struct{ expr, legend string }

// panelSpec is one panel: a kind, a title, what it means, and its queries.
type panelSpec struct {
	kind          string // timeseries, stat, heatmap
	title, help   string
	unit          string
	queries       []query
	width, height uint32
}

// row is a titled group of panels.
type row struct {
	title  string
	panels []panelSpec
}

// ds is the dashboard's Prometheus data source, chosen by a variable.
var ds = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// The rows of the dashboard. Istio's own request metric carries the
// edge (source_workload → destination_workload) and, through
// manifests/istio/telemetry/telemetry.yaml, meshward's verdict; the filter's own
// metrics carry the workload it runs in as destination_workload (the
// PodMonitor's relabelling).
var rows = []row{
	{"Verdicts per workload and edge", []panelSpec{
		{kind: "timeseries", title: "Requests scored per workload", unit: "reqps", help: "Requests the filter saw, per destination workload (meshward_requests_total).",
			queries: []query{{`sum by (destination_workload_namespace, destination_workload) (rate(meshward_requests_total[5m]))`, "{{destination_workload}}.{{destination_workload_namespace}}"}}},
		{kind: "timeseries", title: "Flagged per workload", unit: "reqps", help: "Requests scored above the threshold, per destination workload (monitor and enforce).",
			queries: []query{{`sum by (destination_workload_namespace, destination_workload) (rate(meshward_flagged_total[5m]))`, "{{destination_workload}}.{{destination_workload_namespace}}"}}},
		{kind: "timeseries", title: "Denied per workload", unit: "reqps", help: "Requests answered 403 by the filter (enforce), per destination workload.",
			queries: []query{{`sum by (destination_workload_namespace, destination_workload) (rate(meshward_denied_total[5m]))`, "{{destination_workload}}.{{destination_workload_namespace}}"}}},
		{kind: "timeseries", title: "Flagged per edge", unit: "reqps", help: "Flagged requests per source → destination workload (Istio's metric with meshward's verdict).",
			queries: []query{{`sum by (source_workload, source_workload_namespace, destination_workload, destination_workload_namespace) (rate(istio_requests_total{reporter="destination", meshward_verdict="flagged"}[5m]))`, "{{source_workload}}.{{source_workload_namespace}} → {{destination_workload}}.{{destination_workload_namespace}}"}}},
		{kind: "timeseries", title: "Denied per edge", unit: "reqps", help: "Requests the filter denied, per source → destination workload.",
			queries: []query{{`sum by (source_workload, source_workload_namespace, destination_workload, destination_workload_namespace) (rate(istio_requests_total{reporter="destination", meshward_verdict="denied"}[5m]))`, "{{source_workload}}.{{source_workload_namespace}} → {{destination_workload}}.{{destination_workload_namespace}}"}}},
		{kind: "timeseries", title: "Unscored share per workload", unit: "percentunit", help: "Requests the filter let through without a score (no model section, internal error).",
			queries: []query{{`sum by (destination_workload_namespace, destination_workload) (rate(meshward_unscored_total[5m])) / sum by (destination_workload_namespace, destination_workload) (rate(meshward_requests_total[5m]))`, "{{destination_workload}}.{{destination_workload_namespace}}"}}},
		{kind: "timeseries", title: "Bytes not inspected per workload", unit: "Bps", help: "Request bytes the filter let through without reading them: bodies past max_body_bytes, headers past max_headers or max_header_bytes (monitor mode, or over_limit inspect).",
			queries: []query{{`sum by (destination_workload_namespace, destination_workload) (rate(meshward_uninspected_bytes_total[5m]))`, "{{destination_workload}}.{{destination_workload_namespace}}"}}},
		{kind: "timeseries", title: "Unidentified callers per workload", unit: "reqps", help: "Requests whose caller nothing trustworthy named (no mTLS identity, no address): scored as an unknown caller, never learned.",
			queries: []query{{`sum by (destination_workload_namespace, destination_workload) (rate(meshward_unidentified_total[5m]))`, "{{destination_workload}}.{{destination_workload_namespace}}"}}},
	}},
	{"Scores", []panelSpec{
		{kind: "heatmap", title: "Score distribution ($workload)", help: "Scores × 1000 of every scored request to the chosen workloads (meshward_score_permille); 500 is the calibrated threshold.", width: 12,
			queries: []query{{`sum by (le) (rate(meshward_score_permille_bucket{destination_workload=~"$workload"}[5m]))`, "{{le}}"}}},
		{kind: "timeseries", title: "Score p50 and p99 per workload", help: "Quantiles of the score (× 1000) per destination workload.", width: 12,
			queries: []query{
				{`histogram_quantile(0.99, sum by (le, destination_workload) (rate(meshward_score_permille_bucket{destination_workload=~"$workload"}[5m])))`, "p99 {{destination_workload}}"},
				{`histogram_quantile(0.5, sum by (le, destination_workload) (rate(meshward_score_permille_bucket{destination_workload=~"$workload"}[5m])))`, "p50 {{destination_workload}}"},
			}},
		{kind: "timeseries", title: "Flagged share per edge", unit: "percentunit", help: "Share of each edge's requests that were flagged or denied.", width: 24,
			queries: []query{{`sum by (source_workload, destination_workload) (rate(istio_requests_total{reporter="destination", meshward_verdict=~"flagged|denied"}[5m])) / sum by (source_workload, destination_workload) (rate(istio_requests_total{reporter="destination"}[5m]))`, "{{source_workload}} → {{destination_workload}}"}}},
	}},
	{"Models and rollouts", []panelSpec{
		{kind: "stat", title: "Model in force", help: "The model version (sha256) the control plane rolls out.",
			queries: []query{{`max by (sha256) (meshward_model_info)`, "{{sha256}}"}}},
		{kind: "stat", title: "Canary out", help: "A candidate model out to the canary share of the nodes.",
			queries: []query{{`max by (sha256) (meshward_rollout_canary_active)`, "{{sha256}}"}}},
		{kind: "timeseries", title: "Training rounds", help: "Training rounds per hour by outcome (published, rejected by the gate, failed).",
			queries: []query{{`sum by (outcome) (increase(meshward_trainer_rounds_total[1h]))`, "{{outcome}}"}}},
		{kind: "timeseries", title: "Canary decisions", help: "Canaries promoted or rolled back (their flagged rate against the stable model's), per hour.",
			queries: []query{{`sum by (outcome) (increase(meshward_canary_decisions_total[1h]))`, "{{outcome}}"}}},
		{kind: "timeseries", title: "Rollbacks, NACKs and refused configurations", help: "Model rollbacks, configurations Envoys refused over xDS, and configurations the filter refused.",
			queries: []query{
				{`sum(increase(meshward_rollbacks_total[1h]))`, "rollbacks / h"},
				{`max(meshward_xds_nacks)`, "xDS NACKs (last 100)"},
				{`sum(increase(meshward_xds_sync_failures_total[1h]))`, "xDS syncs failed / h (last snapshot kept)"},
				{`sum(increase(meshward_config_rejected_total[1h]))`, "filter configurations refused / h"},
			}},
		{kind: "stat", title: "Models kept", help: "Model versions in the store's history (rollback targets).",
			queries: []query{{`max(meshward_models_stored)`, "models"}}},
	}},
	{"Day two: readiness and exceptions", []panelSpec{
		{kind: "stat", title: "Workloads by readiness", help: "Workloads per readiness verdict (learning, ready for monitor, ready for enforce) as the last training round assessed the model in force; meshward status and /api/v1/workloads give each one's reason.", width: 8,
			queries: []query{{`count by (verdict) (meshward_workload_readiness == 1)`, "{{verdict}}"}}},
		{kind: "stat", title: "Readiness per workload", help: "Each workload's readiness verdict; -filter-learn-first moves a workload to monitor once it is ready.", width: 16,
			queries: []query{{`max by (workload, verdict) (meshward_workload_readiness == 1)`, "{{workload}}: {{verdict}}"}}},
		{kind: "stat", title: "Exceptions in force", help: "Exceptions the filters apply before denying, per workload or mesh-wide (meshward allow, POST /api/v1/exceptions).", width: 8,
			queries: []query{{`sum by (scope) (meshward_exceptions)`, "{{scope}}"}}},
		{kind: "timeseries", title: "Exception changes", help: "Exceptions added, revoked, expired and refused, per hour (each also an audit line and a Kubernetes Event).", width: 16,
			queries: []query{{`sum by (action) (increase(meshward_exception_changes_total[1h]))`, "{{action}}"}}},
	}},
	{"Incidents and quarantines", []panelSpec{
		{kind: "stat", title: "Incidents (last 24 h)", help: "Lateral-movement incidents recorded.",
			queries: []query{{`max(increase(meshward_incidents_total[24h]))`, "incidents"}}},
		{kind: "timeseries", title: "Incidents per hour", help: "Incidents recorded per hour.",
			queries: []query{{`max(increase(meshward_incidents_total[1h]))`, "incidents / h"}}},
		{kind: "timeseries", title: "Quarantined requests per edge", unit: "reqps", help: "Requests denied by a meshward quarantine AuthorizationPolicy (enforced, not dry-run), per edge.", width: 12,
			queries: []query{{`sum by (source_workload, source_workload_namespace, destination_workload) (rate(istio_requests_total{reporter="destination", meshward_verdict="quarantined"}[5m]))`, "{{source_workload}}.{{source_workload_namespace}} → {{destination_workload}}"}}},
	}},
	{"Collector and store", []panelSpec{
		{kind: "timeseries", title: "Collector batches by status", unit: "reqps", help: "Batches the collector answered, by HTTP status (503: backpressure or store down).",
			queries: []query{{`sum by (code) (rate(meshward_collector_batches_total[5m]))`, "{{code}}"}}},
		{kind: "timeseries", title: "Records by outcome", unit: "ops", help: "Records received by the collector, by outcome.",
			queries: []query{{`sum by (outcome) (rate(meshward_collector_records_total[5m]))`, "{{outcome}}"}}},
		{kind: "timeseries", title: "Collector refusals by reason", unit: "ops", help: "Records refused (about another workload than the sender's, outside the clock-skew window, bad sample rate, invalid) and batches refused whole (unauthenticated, busy, too large, read timeout).",
			queries: []query{
				{`sum by (reason) (rate(meshward_collector_records_refused_total[5m]))`, "record: {{reason}}"},
				{`sum by (reason) (rate(meshward_collector_batches_refused_total[5m]))`, "batch: {{reason}}"},
			}},
		{kind: "timeseries", title: "Records shipped and dropped by filters", unit: "ops", help: "Records the filters shipped, dropped because their buffer was full, shipped with as many value digests as a record carries (short values past them went without one), and shipped with their query cut (longer than 64 KiB: max_header_bytes raised).",
			queries: []query{
				{`sum(rate(meshward_records_shipped_total[5m]))`, "shipped"},
				{`sum(rate(meshward_records_dropped_total[5m]))`, "dropped"},
				{`sum(rate(meshward_digest_marks_capped_total[5m]))`, "digests capped"},
				{`sum(rate(meshward_record_query_cut_total[5m]))`, "query cut"},
			}},
		{kind: "stat", title: "Redis up", help: "1 when every control-plane replica reaches Redis.",
			queries: []query{{`min(meshward_redis_up)`, "redis"}}},
	}},
}

// Rule is one Prometheus alerting rule.
type Rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// rules are the alerts: incidents, rollbacks, unscored traffic, and the
// health of the pieces that keep meshward learning.
var rules = []Rule{
	{Alert: "MeshwardIncident", Expr: `max(increase(meshward_incidents_total[10m])) > 0`,
		Labels:      map[string]string{"severity": "warning"},
		Annotations: map[string]string{"summary": "meshward recorded a lateral-movement incident", "description": "{{ $value }} incident(s) in 10 minutes. `meshward status`, or GET /api/v1/incidents on the admin endpoint, shows the principal and its evidence."}},
	{Alert: "MeshwardModelRolledBack", Expr: `sum(increase(meshward_rollbacks_total[30m])) > 0`,
		Labels:      map[string]string{"severity": "warning"},
		Annotations: map[string]string{"summary": "a meshward model was rolled back", "description": "The model in force was rolled back to an earlier version in the last 30 minutes; the rolled-back version flagged too much or was refused."}},
	{Alert: "MeshwardCanaryRolledBack", Expr: `sum(increase(meshward_canary_decisions_total{outcome="rolled_back"}[30m])) > 0`,
		Labels:      map[string]string{"severity": "warning"},
		Annotations: map[string]string{"summary": "a meshward canary model was rolled back", "description": "A candidate model flagged more than the stable model allows (or saw too little traffic) and was rolled back; GET /api/v1/rollouts has the decision and its evidence."}},
	{Alert: "MeshwardXDSSyncFailing", Expr: `sum(rate(meshward_xds_sync_failures_total[5m])) > 0`, For: "10m",
		Labels:      map[string]string{"severity": "warning"},
		Annotations: map[string]string{"summary": "meshward's xDS cannot read the rollout state", "description": "The control plane keeps serving its last snapshot; new models and rollbacks do not reach Envoys until the store answers."}},
	{Alert: "MeshwardXDSNACK", Expr: `max(meshward_xds_nacks) > 0`, For: "15m",
		Labels:      map[string]string{"severity": "warning"},
		Annotations: map[string]string{"summary": "Envoys refuse meshward's configuration", "description": "Envoys NACKed the filter configuration served over xDS; they keep the previous one. GET /api/v1/rollouts lists the errors."}},
	{Alert: "MeshwardUnscoredTraffic", Expr: `sum by (destination_workload_namespace, destination_workload) (rate(meshward_unscored_total[10m])) / sum by (destination_workload_namespace, destination_workload) (rate(meshward_requests_total[10m])) > 0.05`, For: "15m",
		Labels:      map[string]string{"severity": "warning"},
		Annotations: map[string]string{"summary": "{{ $labels.destination_workload }}: over 5 % of requests unscored", "description": "The filter in {{ $labels.destination_workload }}.{{ $labels.destination_workload_namespace }} lets {{ $value | humanizePercentage }} of requests through unscored: the model has no section for the workload (train it), or the filter fails internally."}},
	// A VM that fails (a trap, a start refused) takes the filter out of the
	// request path without a word: failStrategy FAIL_OPEN lets traffic
	// through, and Envoy has no stat counting such failures. What shows is
	// the workload still serving requests while the filter counts none.
	{Alert: "MeshwardFilterNotRunning", Expr: `(sum by (destination_workload_namespace, destination_workload) (rate(istio_requests_total{reporter="destination"}[10m])) > 0) unless on (destination_workload_namespace, destination_workload) (sum by (destination_workload_namespace, destination_workload) (rate(meshward_requests_total[10m])) > 0) and on (destination_workload_namespace, destination_workload) (sum by (destination_workload_namespace, destination_workload) (max_over_time(meshward_requests_total[1d])) > 0)`, For: "10m",
		Labels:      map[string]string{"severity": "critical"},
		Annotations: map[string]string{"summary": "the meshward filter has stopped counting requests on {{ $labels.destination_workload }}.{{ $labels.destination_workload_namespace }}", "description": "The workload serves requests but its filter counted none for 10 minutes, after counting some in the last day: its Wasm VM failed or did not start, and with failStrategy FAIL_OPEN traffic flows unjudged. Look for 'wasm' errors in the sidecar's log, and at envoy_wasm_envoy_wasm_runtime_v8_active and the plugin's vm_reload_failure counter; docs/operations.md has the steps."}},
	{Alert: "MeshwardFilterConfigRejected", Expr: `sum by (destination_workload_namespace, destination_workload) (increase(meshward_config_rejected_total[15m])) > 0`,
		Labels:      map[string]string{"severity": "warning"},
		Annotations: map[string]string{"summary": "the filter in {{ $labels.destination_workload }} refused its configuration", "description": "The filter keeps its previous configuration and model; its log line names every bad field."}},
	{Alert: "MeshwardRecordsDropped", Expr: `sum by (destination_workload_namespace, destination_workload) (rate(meshward_records_dropped_total[10m])) > 0`, For: "15m",
		Labels:      map[string]string{"severity": "info"},
		Annotations: map[string]string{"summary": "filters drop records they cannot ship", "description": "The filter's buffer in {{ $labels.destination_workload }} is full: the collector is unreachable or pushes back."}},
	{Alert: "MeshwardCollectorBackpressure", Expr: `sum(rate(meshward_collector_batches_total{code="503"}[5m])) > 0`, For: "10m",
		Labels:      map[string]string{"severity": "warning"},
		Annotations: map[string]string{"summary": "the meshward collector answers 503", "description": "The collector pushes back (Redis slow, full or down); filters retry and then drop."}},
	{Alert: "MeshwardForgedRecords", Expr: `sum(increase(meshward_collector_records_refused_total{reason="not_sender_workload"}[10m])) > 0`,
		Labels:      map[string]string{"severity": "warning"},
		Annotations: map[string]string{"summary": "a sidecar sent records about another workload", "description": "The collector refused records whose destination is not the sender's workload: a workload tries to poison another's model, or a workload's identity binding is wrong (-workload-identities). The collector's log and GET /metrics name the reason; nothing was stored."}},
	{Alert: "MeshwardRedisDown", Expr: `min(meshward_redis_up) == 0`, For: "2m",
		Labels:      map[string]string{"severity": "critical"},
		Annotations: map[string]string{"summary": "meshward cannot reach Redis", "description": "Training and collection stop; xDS keeps serving the last model."}},
	{Alert: "MeshwardTrainingFailing", Expr: `sum(increase(meshward_trainer_rounds_total{outcome="failed"}[1h])) > 0`, For: "1h",
		Labels:      map[string]string{"severity": "info"},
		Annotations: map[string]string{"summary": "meshward training rounds fail", "description": "The control plane's log says why (see the trainer's 'training round failed' lines)."}},
}

// The dashboard's workload variable: it lists the values of WorkloadLabel
// on WorkloadMetric, and panels select on it as $workload; "All" is
// WorkloadAll.
const (
	WorkloadVariable = "workload"
	WorkloadMetric   = "meshward_requests_total"
	WorkloadLabel    = "destination_workload"
	WorkloadAll      = ".*"
)

// Queries returns every PromQL expression of the dashboard and the rules
// (for the workload variable, the metric it reads).
func Queries() []string {
	out := []string{WorkloadMetric}
	for _, r := range rows {
		for _, p := range r.panels {
			for _, q := range p.queries {
				out = append(out, q.expr)
			}
		}
	}
	for _, r := range rules {
		out = append(out, r.Expr)
	}
	return out
}

// PanelQuery is one query of a dashboard panel and the legend Grafana
// draws for each series it returns ({{label}} is that series' label).
type PanelQuery struct {
	Row, Panel, Expr, Legend string
}

// PanelQueries returns the query of every panel, in dashboard order.
func PanelQueries() []PanelQuery {
	var out []PanelQuery
	for _, r := range rows {
		for _, p := range r.panels {
			for _, q := range p.queries {
				out = append(out, PanelQuery{Row: r.title, Panel: p.title, Expr: q.expr, Legend: q.legend})
			}
		}
	}
	return out
}

// Rules returns the alert rules (a copy: tests may not change what is
// generated).
func Rules() []Rule {
	out := make([]Rule, len(rules))
	copy(out, rules)
	return out
}

// Dashboard builds the Grafana dashboard. It uses the SDK's v1 dashboard
// schema, which the SDK marks deprecated in favour of v2: v2 needs Grafana
// 12's new dashboard API, while v1 JSON is what Grafana provisions from a
// file or a ConfigMap today.
//
//nolint:staticcheck // v1 schema on purpose, see above
func Dashboard() (dashboard.Dashboard, error) {
	//nolint:staticcheck // v1 schema on purpose, see above
	b := dashboard.NewDashboardBuilder("meshward").
		Uid(UID).
		Tags([]string{"meshward", "istio", "security"}).
		Description("meshward: scores, verdicts per workload and edge, models and rollouts, incidents, collector and store. Generated by manifests/internal/monitoring; do not edit the JSON.").
		Refresh("1m").
		Time("now-6h", "now").
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Data source").Type("prometheus")).
		WithVariable(dashboard.NewQueryVariableBuilder(WorkloadVariable).Label("Workload").Datasource(ds).
			Query(dashboard.StringOrMap{String: cog.ToPtr("label_values(" + WorkloadMetric + ", " + WorkloadLabel + ")")}).
			Multi(true).IncludeAll(true).AllValue(WorkloadAll).Refresh(dashboard.VariableRefreshOnTimeRangeChanged).Sort(dashboard.VariableSortAlphabeticalAsc))
	refID := func(i int) string { return string(rune('A' + i)) }
	for _, r := range rows {
		rb := dashboard.NewRowBuilder(r.title)
		for _, p := range r.panels {
			w, h := p.width, p.height
			if w == 0 {
				w = 8
			}
			if h == 0 {
				h = 8
			}
			var targets []cog.Builder[variants.Dataquery]
			for i, q := range p.queries {
				pq := prometheus.NewDataqueryBuilder().Expr(q.expr).LegendFormat(q.legend).RefId(refID(i))
				if p.kind == "heatmap" {
					pq = pq.Format(prometheus.PromQueryFormatHeatmap)
				}
				targets = append(targets, pq)
			}
			switch p.kind {
			case "heatmap":
				pb := heatmap.NewPanelBuilder().Title(p.title).Description(p.help).Datasource(ds).Span(w).Height(h).Calculate(false)
				for _, t := range targets {
					pb.WithTarget(t)
				}
				rb.WithPanel(pb)
			case "stat":
				pb := stat.NewPanelBuilder().Title(p.title).Description(p.help).Datasource(ds).Span(w).Height(h).
					TextMode(common.BigValueTextModeValueAndName).ColorMode(common.BigValueColorModeNone)
				if p.unit != "" {
					pb.Unit(p.unit)
				}
				for _, t := range targets {
					pb.WithTarget(t)
				}
				rb.WithPanel(pb)
			default:
				pb := timeseries.NewPanelBuilder().Title(p.title).Description(p.help).Datasource(ds).Span(w).Height(h).
					Legend(common.NewVizLegendOptionsBuilder().DisplayMode(common.LegendDisplayModeTable).Placement(common.LegendPlacementBottom).ShowLegend(true))
				if p.unit != "" {
					pb.Unit(p.unit)
				}
				for _, t := range targets {
					pb.WithTarget(t)
				}
				rb.WithPanel(pb)
			}
		}
		b.WithRow(rb)
	}
	return b.Build()
}

// DashboardJSON is the dashboard as Grafana imports it.
func DashboardJSON() ([]byte, error) {
	d, err := Dashboard()
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// PrometheusRuleYAML is the alert rules as a Prometheus Operator
// PrometheusRule in the control plane's namespace.
func PrometheusRuleYAML() ([]byte, error) {
	doc := map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "PrometheusRule",
		"metadata": map[string]any{
			"name": "meshward", "namespace": "meshward-system",
			"labels": map[string]string{"app.kubernetes.io/name": "meshward"},
		},
		"spec": map[string]any{"groups": []any{map[string]any{"name": "meshward", "rules": rules}}},
	}
	body, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return append([]byte("# Generated by manifests/internal/monitoring (make manifests); do not edit.\n"), body...), nil
}
