package manifests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/manifests/internal/monitoring"
)

// The shipped alert rules are run by promtool (Debian's, installed by
// `make deps`): `promtool check rules` on the rules the PrometheusRule
// holds, and `promtool test rules` on input series for every alert, each
// shown to fire when it should (with its labels and its annotations as
// rendered) and to stay quiet when it should not. The cases are Go values
// (alertCases) written as promtool's test file; an alert without a case
// where it fires and one where it stays quiet fails the test.
//
// Values in the cases follow Prometheus 2.42's range semantics (both ends
// of a range included): where an annotation renders $value, the series are
// chosen so the window holds samples at both ends and nothing is
// extrapolated.

// rulesFileName is the plain rules file extracted from the PrometheusRule.
const rulesFileName = "meshward-rules.yaml"

// promtool returns Debian's promtool.
func promtool(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed: run `make deps` (it installs Debian's prometheus package): %v", err)
	}
	return bin
}

// writeRules writes the groups of monitoring/prometheusrule.yaml (what the
// Prometheus Operator loads) as a plain Prometheus rules file in dir.
func writeRules(t *testing.T, dir string) string {
	t.Helper()
	var pr struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Groups []yaml.Node `yaml:"groups"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(read(t, "monitoring/prometheusrule.yaml"), &pr); err != nil {
		t.Fatal(err)
	}
	if pr.Kind != "PrometheusRule" || len(pr.Spec.Groups) == 0 {
		t.Fatalf("monitoring/prometheusrule.yaml: kind %q with %d groups, want a PrometheusRule with groups", pr.Kind, len(pr.Spec.Groups))
	}
	body, err := yaml.Marshal(map[string]any{"groups": pr.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, rulesFileName)
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runPromtool runs promtool with args and returns its combined output.
func runPromtool(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	return string(out), err
}

// promtool accepts the shipped rules, and finds every alert in them; a
// rule it cannot parse is refused (the check can fail).
func TestPromtoolCheckRules(t *testing.T) {
	dir := t.TempDir()
	path := writeRules(t, dir)
	out, err := runPromtool(t, "check", "rules", path)
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFileName, err, out)
	}
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(monitoring.Rules())); !strings.Contains(out, want) {
		t.Errorf("promtool check rules: want %q in\n%s", want, out)
	}
	body, _ := os.ReadFile(path)
	broken := bytes.Replace(body, []byte("> 0"), []byte("> > 0"), 1)
	if bytes.Equal(broken, body) {
		t.Fatal("found no expression to break")
	}
	bad := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(bad, broken, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runPromtool(t, "check", "rules", bad); err == nil {
		t.Errorf("promtool accepted a broken expression:\n%s", out)
	}
}

// series is one input series in promtool's notation: "a+bxn" is n+1
// values from a in steps of b, "axn" a repeated n+1 times, "_" no sample.
type series struct{ name, values string }

// firing is an alert expected to fire: the labels its expression gives
// (the rule's own, like severity, are added), and what each template
// action of its annotations renders to (every action must be given).
type firing struct {
	labels  map[string]string
	renders map[string]string
}

// eval is what one alert does at one time: fire as given, or (no
// firing) stay quiet.
type eval struct {
	at     string
	alert  string
	firing []firing
}

// alertCase is one scenario: series at an interval, and evaluations.
type alertCase struct {
	name     string
	interval string // default 1m
	series   []series
	evals    []eval
}

// Label sets of the series.
const (
	cp0 = `{job="meshward",instance="10.0.0.5:9091"}`
	cp1 = `{job="meshward",instance="10.0.0.6:9091"}`
)

// wl is the labels the PodMonitor gives a workload's filter metrics
// (extra are more labels, e.g. Istio's).
func wl(name, ns string, extra ...string) string {
	ls := append([]string{`destination_workload="` + name + `"`, `destination_workload_namespace="` + ns + `"`, `job="meshward-filter"`}, extra...)
	return "{" + strings.Join(ls, ",") + "}"
}

// workload is the alert labels of a per-workload alert.
func workload(name, ns string) map[string]string {
	return map[string]string{"destination_workload": name, "destination_workload_namespace": ns}
}

const istioDest = `reporter="destination"`

var alertCases = []alertCase{
	{name: "an incident fires MeshwardIncident once, whichever replica is scraped; it clears after 10 minutes",
		series: []series{
			{"meshward_incidents_total" + cp0, "0x14 2x40"},
			{"meshward_incidents_total" + cp1, "0x14 2x40"},
		},
		evals: []eval{
			{at: "10m", alert: "MeshwardIncident"},
			// Two incidents; max, not sum, over the replicas sharing the store.
			{at: "20m", alert: "MeshwardIncident", firing: []firing{{renders: map[string]string{"{{ $value }}": "2"}}}},
			{at: "40m", alert: "MeshwardIncident"},
		}},
	{name: "a replica that joins later reports the shared total: no incident",
		series: []series{
			{"meshward_incidents_total" + cp0, "3x40"},
			{"meshward_incidents_total" + cp1, "_x20 3x20"},
		},
		evals: []eval{{at: "25m", alert: "MeshwardIncident"}}},

	{name: "a rollback fires MeshwardModelRolledBack for 30 minutes",
		series: []series{{"meshward_rollbacks_total" + cp0, "0x10 1x60"}},
		evals: []eval{
			{at: "5m", alert: "MeshwardModelRolledBack"},
			{at: "15m", alert: "MeshwardModelRolledBack", firing: []firing{{}}},
			{at: "50m", alert: "MeshwardModelRolledBack"},
		}},
	{name: "a replica restarting (its counter back to 0) is no rollback",
		series: []series{{"meshward_rollbacks_total" + cp0, "1x10 0x30"}},
		evals:  []eval{{at: "15m", alert: "MeshwardModelRolledBack"}}},

	{name: "a canary rolled back fires MeshwardCanaryRolledBack (its series exported from 0)",
		series: []series{
			{`meshward_canary_decisions_total{job="meshward",outcome="rolled_back"}`, "0x10 1x40"},
			{`meshward_canary_decisions_total{job="meshward",outcome="promoted"}`, "0x50"},
		},
		evals: []eval{
			{at: "5m", alert: "MeshwardCanaryRolledBack"},
			{at: "15m", alert: "MeshwardCanaryRolledBack", firing: []firing{{}}},
			{at: "45m", alert: "MeshwardCanaryRolledBack"},
		}},
	{name: "a canary promoted is no alert",
		series: []series{
			{`meshward_canary_decisions_total{job="meshward",outcome="rolled_back"}`, "0x50"},
			{`meshward_canary_decisions_total{job="meshward",outcome="promoted"}`, "0x10 1x40"},
		},
		evals: []eval{{at: "15m", alert: "MeshwardCanaryRolledBack"}}},

	{name: "xDS syncs failing for 10 minutes fire MeshwardXDSSyncFailing; it clears when they stop",
		// A failed sync every 15 s from minute 11 to minute 31.
		series: []series{{"meshward_xds_sync_failures_total" + cp0, "0x10 4+4x20 84x30"}},
		evals: []eval{
			{at: "18m", alert: "MeshwardXDSSyncFailing"}, // pending
			{at: "25m", alert: "MeshwardXDSSyncFailing", firing: []firing{{}}},
			{at: "45m", alert: "MeshwardXDSSyncFailing"},
		}},

	{name: "NACKs standing for 15 minutes fire MeshwardXDSNACK; it clears when Envoys accept again",
		series: []series{{"meshward_xds_nacks" + cp0, "0x5 3x30 0x20"}},
		evals: []eval{
			{at: "15m", alert: "MeshwardXDSNACK"}, // pending
			{at: "25m", alert: "MeshwardXDSNACK", firing: []firing{{}}},
			{at: "45m", alert: "MeshwardXDSNACK"},
		}},

	{name: "10 % unscored on one workload fires MeshwardUnscoredTraffic for it alone; 1 % and an idle workload stay quiet",
		series: []series{
			{"meshward_requests_total" + wl("cart", "shop"), "0+100x60"},
			{"meshward_unscored_total" + wl("cart", "shop"), "0+10x60"},
			{"meshward_requests_total" + wl("frontend", "shop"), "0+100x60"},
			{"meshward_unscored_total" + wl("frontend", "shop"), "0+1x60"},
			{"meshward_requests_total" + wl("batch", "jobs"), "500x60"},
			{"meshward_unscored_total" + wl("batch", "jobs"), "50x60"},
		},
		evals: []eval{
			{at: "10m", alert: "MeshwardUnscoredTraffic"}, // pending
			{at: "20m", alert: "MeshwardUnscoredTraffic", firing: []firing{{labels: workload("cart", "shop"), renders: map[string]string{
				"{{ $labels.destination_workload }}":           "cart",
				"{{ $labels.destination_workload_namespace }}": "shop",
				"{{ $value | humanizePercentage }}":            "10%",
			}}}},
		}},

	{name: "a filter that stops counting (counter flat or series gone) while its workload serves fires MeshwardFilterNotRunning",
		series: []series{
			// cart: the filter counts until minute 30, then stays flat.
			{"istio_requests_total" + wl("cart", "shop", istioDest), "0+60x90"},
			{"meshward_requests_total" + wl("cart", "shop"), "0+60x30 1800x60"},
			// checkout: the filter's series ends at minute 30 (its VM is gone).
			{"istio_requests_total" + wl("checkout", "shop", istioDest), "0+60x90"},
			{"meshward_requests_total" + wl("checkout", "shop"), "0+60x30"},
			// frontend: the filter keeps counting.
			{"istio_requests_total" + wl("frontend", "shop", istioDest), "0+60x90"},
			{"meshward_requests_total" + wl("frontend", "shop"), "0+60x90"},
			// legacy: never had the filter.
			{"istio_requests_total" + wl("legacy", "shop", istioDest), "0+60x90"},
			// idle: the filter stopped, but nothing is served either.
			{"istio_requests_total" + wl("idle", "shop", istioDest), "0+60x30 1800x60"},
			{"meshward_requests_total" + wl("idle", "shop"), "0+60x30 1800x60"},
			// A client-side report is not the workload serving.
			{"istio_requests_total" + wl("reports", "shop", `reporter="source"`), "0+60x90"},
			{"meshward_requests_total" + wl("reports", "shop"), "0+60x30 1800x60"},
		},
		evals: []eval{
			{at: "30m", alert: "MeshwardFilterNotRunning"},
			{at: "45m", alert: "MeshwardFilterNotRunning"}, // pending
			{at: "55m", alert: "MeshwardFilterNotRunning", firing: []firing{
				{labels: workload("cart", "shop"), renders: map[string]string{
					"{{ $labels.destination_workload }}": "cart", "{{ $labels.destination_workload_namespace }}": "shop"}},
				{labels: workload("checkout", "shop"), renders: map[string]string{
					"{{ $labels.destination_workload }}": "checkout", "{{ $labels.destination_workload_namespace }}": "shop"}},
			}},
		}},

	{name: "a refused configuration fires MeshwardFilterConfigRejected for that workload for 15 minutes",
		series: []series{
			{"meshward_config_rejected_total" + wl("cart", "shop"), "0x10 1x40"},
			{"meshward_config_rejected_total" + wl("frontend", "shop"), "0x50"},
		},
		evals: []eval{
			{at: "5m", alert: "MeshwardFilterConfigRejected"},
			{at: "15m", alert: "MeshwardFilterConfigRejected", firing: []firing{{labels: workload("cart", "shop"), renders: map[string]string{
				"{{ $labels.destination_workload }}": "cart"}}}},
			{at: "40m", alert: "MeshwardFilterConfigRejected"},
		}},

	{name: "records dropped for 15 minutes fire MeshwardRecordsDropped for that workload; it clears when drops stop",
		series: []series{
			{"meshward_records_dropped_total" + wl("cart", "shop"), "0+5x30 150x40"},
			{"meshward_records_dropped_total" + wl("frontend", "shop"), "0x70"},
		},
		evals: []eval{
			{at: "10m", alert: "MeshwardRecordsDropped"}, // pending
			{at: "20m", alert: "MeshwardRecordsDropped", firing: []firing{{labels: workload("cart", "shop"), renders: map[string]string{
				"{{ $labels.destination_workload }}": "cart"}}}},
			{at: "50m", alert: "MeshwardRecordsDropped"},
		}},

	{name: "records about another workload refused fire MeshwardForgedRecords; it clears 10 minutes after they stop",
		series: []series{
			{`meshward_collector_records_refused_total{job="meshward",reason="not_sender_workload"}`, "0x5 4x30"},
			{`meshward_collector_records_refused_total{job="meshward",reason="ts_skew"}`, "0+3x35"},
		},
		evals: []eval{
			{at: "4m", alert: "MeshwardForgedRecords"},
			{at: "8m", alert: "MeshwardForgedRecords", firing: []firing{{}}},
			{at: "20m", alert: "MeshwardForgedRecords"},
		}},
	{name: "refusals for other reasons (clock skew, syntax) leave MeshwardForgedRecords quiet",
		series: []series{
			{`meshward_collector_records_refused_total{job="meshward",reason="not_sender_workload"}`, "0x35"},
			{`meshward_collector_records_refused_total{job="meshward",reason="ts_skew"}`, "0+3x35"},
			{`meshward_collector_records_refused_total{job="meshward",reason="syntax"}`, "0+1x35"},
		},
		evals: []eval{
			{at: "10m", alert: "MeshwardForgedRecords"},
			{at: "30m", alert: "MeshwardForgedRecords"},
		}},

	{name: "the collector answering 503 for 10 minutes fires MeshwardCollectorBackpressure",
		series: []series{
			{`meshward_collector_batches_total{job="meshward",code="503"}`, "0x5 1+1x40"},
			{`meshward_collector_batches_total{job="meshward",code="200"}`, "0+10x45"},
		},
		evals: []eval{
			{at: "10m", alert: "MeshwardCollectorBackpressure"}, // pending
			{at: "20m", alert: "MeshwardCollectorBackpressure", firing: []firing{{}}},
		}},
	{name: "a single 503 (a blip) and steady 200s stay quiet",
		series: []series{
			{`meshward_collector_batches_total{job="meshward",code="503"}`, "0x5 1x40"},
			{`meshward_collector_batches_total{job="meshward",code="200"}`, "0+10x45"},
		},
		evals: []eval{
			{at: "10m", alert: "MeshwardCollectorBackpressure"},
			{at: "20m", alert: "MeshwardCollectorBackpressure"},
		}},

	{name: "one replica losing Redis for 2 minutes fires MeshwardRedisDown; it clears when Redis is back",
		series: []series{
			{"meshward_redis_up" + cp0, "1x10 0x10 1x20"},
			{"meshward_redis_up" + cp1, "1x40"},
		},
		evals: []eval{
			{at: "5m", alert: "MeshwardRedisDown"},
			{at: "12m", alert: "MeshwardRedisDown"}, // pending
			{at: "15m", alert: "MeshwardRedisDown", firing: []firing{{}}},
			{at: "25m", alert: "MeshwardRedisDown"},
		}},

	{name: "training failing round after round for an hour fires MeshwardTrainingFailing",
		interval: "10m", // one sample per training round
		series: []series{
			{`meshward_trainer_rounds_total{job="meshward",outcome="failed"}`, "0x3 1+1x20"},
			{`meshward_trainer_rounds_total{job="meshward",outcome="published"}`, "0+1x3 4x20"},
		},
		evals: []eval{
			{at: "90m", alert: "MeshwardTrainingFailing"}, // pending
			{at: "110m", alert: "MeshwardTrainingFailing", firing: []firing{{}}},
		}},
	{name: "one failed round among published ones stays quiet",
		interval: "10m",
		series: []series{
			{`meshward_trainer_rounds_total{job="meshward",outcome="failed"}`, "0x3 1x20"},
			{`meshward_trainer_rounds_total{job="meshward",outcome="published"}`, "0+1x3 4+1x20"},
		},
		evals: []eval{
			{at: "60m", alert: "MeshwardTrainingFailing"},
			{at: "110m", alert: "MeshwardTrainingFailing"},
		}},
}

// promtoolTestFile writes alertCases as promtool's test file: one test
// group per case, the expected annotations rendered from each rule's with
// the case's values. It reports cases that name no shipped alert or leave
// a template action unrendered.
func promtoolTestFile(rules []monitoring.Rule) ([]byte, error) {
	byName := map[string]monitoring.Rule{}
	for _, r := range rules {
		byName[r.Alert] = r
	}
	type expAlert struct {
		Labels      map[string]string `yaml:"exp_labels"`
		Annotations map[string]string `yaml:"exp_annotations"`
	}
	type alertTest struct {
		EvalTime  string     `yaml:"eval_time"`
		Alertname string     `yaml:"alertname"`
		ExpAlerts []expAlert `yaml:"exp_alerts"`
	}
	type inputSeries struct {
		Series string `yaml:"series"`
		Values string `yaml:"values"`
	}
	type group struct {
		Name        string        `yaml:"name"`
		Interval    string        `yaml:"interval"`
		InputSeries []inputSeries `yaml:"input_series"`
		Alerts      []alertTest   `yaml:"alert_rule_test"`
	}
	var errs []string
	var groups []group
	for _, c := range alertCases {
		g := group{Name: c.name, Interval: c.interval}
		if g.Interval == "" {
			g.Interval = "1m"
		}
		for _, s := range c.series {
			g.InputSeries = append(g.InputSeries, inputSeries{s.name, s.values})
		}
		for _, e := range c.evals {
			r, ok := byName[e.alert]
			if !ok {
				errs = append(errs, fmt.Sprintf("case %q tests %s, which is no shipped alert", c.name, e.alert))
				continue
			}
			at := alertTest{EvalTime: e.at, Alertname: e.alert, ExpAlerts: []expAlert{}}
			for _, f := range e.firing {
				exp := expAlert{Labels: map[string]string{}, Annotations: map[string]string{}}
				for k, v := range r.Labels {
					exp.Labels[k] = v
				}
				for k, v := range f.labels {
					exp.Labels[k] = v
				}
				for k, v := range r.Annotations {
					for action, rendered := range f.renders {
						v = strings.ReplaceAll(v, action, rendered)
					}
					if strings.Contains(v, "{{") {
						errs = append(errs, fmt.Sprintf("case %q: say what %s's %s annotation renders at %s: %q", c.name, e.alert, k, e.at, v))
					}
					exp.Annotations[k] = v
				}
				at.ExpAlerts = append(at.ExpAlerts, exp)
			}
			g.Alerts = append(g.Alerts, at)
		}
		groups = append(groups, g)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return yaml.Marshal(map[string]any{"rule_files": []string{rulesFileName}, "evaluation_interval": "1m", "tests": groups})
}

// Every shipped alert has a case where it fires and one where it stays
// quiet, and promtool finds each case true of the shipped rules.
func TestPromtoolAlertCases(t *testing.T) {
	rules := monitoring.Rules()
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, c := range alertCases {
		for _, e := range c.evals {
			if len(e.firing) > 0 {
				fires[e.alert] = true
			} else {
				quiet[e.alert] = true
			}
		}
	}
	var untested []string
	for _, r := range rules {
		if !fires[r.Alert] {
			untested = append(untested, r.Alert+" (no case where it fires)")
		}
		if !quiet[r.Alert] {
			untested = append(untested, r.Alert+" (no case where it stays quiet)")
		}
	}
	sort.Strings(untested)
	if len(untested) > 0 {
		t.Errorf("alerts without promtool cases; add them to alertCases in manifests/alerts_test.go:\n  %s", strings.Join(untested, "\n  "))
	}
	body, err := promtoolTestFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeRules(t, dir)
	path := filepath.Join(dir, "meshward-rules.test.yaml")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runPromtool(t, "test", "rules", path)
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s\nthe test file:\n%s", err, out, body)
	}
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules: no SUCCESS in\n%s", out)
	}
}

// The case checker catches what it should: a case for an alert that does
// not exist, and a firing case that leaves a template action unrendered.
func TestPromtoolCasesAreChecked(t *testing.T) {
	saved := alertCases
	t.Cleanup(func() { alertCases = saved })
	alertCases = []alertCase{{name: "x", evals: []eval{{at: "1m", alert: "MeshwardNoSuchAlert"}}}}
	if _, err := promtoolTestFile(monitoring.Rules()); err == nil || !strings.Contains(err.Error(), "MeshwardNoSuchAlert, which is no shipped alert") {
		t.Errorf("unknown alert: %v", err)
	}
	alertCases = []alertCase{{name: "x", evals: []eval{{at: "1m", alert: "MeshwardUnscoredTraffic", firing: []firing{{}}}}}}
	if _, err := promtoolTestFile(monitoring.Rules()); err == nil || !strings.Contains(err.Error(), "humanizePercentage") {
		t.Errorf("unrendered template: %v", err)
	}
}
