package manifests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/filter/plugin"
	"github.com/meshward/meshward/internal/promtest"
	"github.com/meshward/meshward/manifests/internal/monitoring"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// The dashboard on a real Prometheus: Debian's prometheus scrapes a real
// control plane (control-plane/server with its embedded store, driven
// through a training round and a canary) as the ServiceMonitor says, and
// emulated sidecars (Envoy's /stats/prometheus text with the filter's
// metrics and Istio's istio_requests_total) as the PodMonitor says — its
// relabelings and metric relabelings run by Prometheus on the Kubernetes
// service-discovery labels a pod would have. Every panel's query, with the
// workload variable as Grafana fills it, must return series carrying the
// labels its legend draws.
func TestDashboardOnRealPrometheus(t *testing.T) {
	cp := startControlPlane(t)
	driveControlPlane(t, cp)
	pods := emulatedPods(t)
	p := promtest.Start(t, promtest.Config{Jobs: []promtest.Job{controlPlaneJob(t, cp), filterJob(t, pods)}})
	promtest.Eventually(t, time.Minute, "every target scraped and up", p.TargetsUp)

	// The workload variable lists what the PodMonitor names the pods:
	// Istio's workload names, the same Istio's own metric carries (the
	// alerts join the two on it).
	var want []string
	for _, pod := range pods {
		want = append(want, pod.workload)
	}
	sort.Strings(want)
	promtest.Eventually(t, time.Minute, "every pod's stats scraped", func() error {
		v, err := p.QueryErr(`count(` + monitoring.WorkloadMetric + `)`)
		if err != nil || len(v) != 1 || int(v[0].Value) != len(pods) {
			return fmt.Errorf("count(%s): %v %v, want %d", monitoring.WorkloadMetric, v, err, len(pods))
		}
		return nil
	})
	if got := p.LabelValues(t, monitoring.WorkloadLabel, monitoring.WorkloadMetric); !slices.Equal(got, want) {
		t.Errorf("label_values(%s, %s) = %v, want the pods' workloads %v", monitoring.WorkloadMetric, monitoring.WorkloadLabel, got, want)
	}
	if got := p.LabelValues(t, monitoring.WorkloadLabel, `istio_requests_total{reporter="destination"}`); !slices.Equal(got, want) {
		t.Errorf("Istio's destination_workload values %v, the filter's %v: the PodMonitor must name a pod's workload as Istio does", got, want)
	}
	// The metric relabeling keeps only meshward's and Istio's request metric.
	if v := p.Query(t, `envoy_server_uptime`); len(v) != 0 {
		t.Errorf("the PodMonitor's metric relabeling kept Envoy's own stats: %v", v)
	}

	// Grafana fills $workload with the All value, or one workload.
	for _, sel := range []string{monitoring.WorkloadAll, want[0]} {
		queries := monitoring.PanelQueries()
		var last map[string]int
		promtest.Eventually(t, time.Minute, "every panel query returns series with its legend's labels ($workload="+sel+")", func() error {
			last = map[string]int{}
			var errs []error
			for _, q := range queries {
				n, err := checkPanelQuery(p, q, sel)
				if err != nil {
					errs = append(errs, err)
				}
				last[q.Panel+": "+q.Legend] = n
			}
			return errors.Join(errs...)
		})
		if testing.Verbose() {
			for _, q := range queries {
				t.Logf("$workload=%s  %-45s %-50s %d series", sel, q.Panel, q.Legend, last[q.Panel+": "+q.Legend])
			}
		}
	}
}

// legendLabel finds the labels a Grafana legend draws ({{label}}).
var legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// checkPanelQuery runs one panel query with $workload as sel and returns
// how many series it gave, or why it is not yet what the panel needs.
func checkPanelQuery(p *promtest.Server, q monitoring.PanelQuery, sel string) (int, error) {
	expr := strings.ReplaceAll(q.Expr, "$"+monitoring.WorkloadVariable, sel)
	v, err := p.QueryErr(expr)
	if err != nil {
		return 0, fmt.Errorf("panel %q: %w", q.Panel, err)
	}
	if len(v) == 0 {
		return 0, fmt.Errorf("panel %q: %s returns no series", q.Panel, expr)
	}
	var errs []error
	for _, s := range v {
		for _, m := range legendLabel.FindAllStringSubmatch(q.Legend, -1) {
			if s.Metric[model.LabelName(m[1])] == "" {
				errs = append(errs, fmt.Errorf("panel %q: legend %q draws %s, which series %v of %s lacks", q.Panel, q.Legend, m[1], s.Metric, expr))
			}
		}
		if w, ok := s.Metric[monitoring.WorkloadLabel]; ok && sel != monitoring.WorkloadAll && strings.Contains(q.Expr, "$"+monitoring.WorkloadVariable) && string(w) != sel {
			errs = append(errs, fmt.Errorf("panel %q: $workload=%s gave a series of %s", q.Panel, sel, w))
		}
	}
	return len(v), errors.Join(errs...)
}

// cpToken is the token cart.shop's sidecar ships records with (the
// collector's development token mode), and adminToken the admin API's
// (Prometheus scrapes /metrics with it).
const (
	cpToken    = "dashboard-test-sidecar-token-0123456789"
	adminToken = "dashboard-test-admin-token-0123456789abcdef"
)

// startControlPlane starts `meshward serve` in process: embedded store,
// loopback listeners, xDS on (so the rollout metrics exist), no periodic
// training.
func startControlPlane(t *testing.T) *server.Server {
	cfg := server.DefaultConfig()
	cfg.CollectorAddr, cfg.AdminAddr, cfg.XDSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	id, _ := identity.Binding{TrustDomain: cfg.TrustDomain}.Identity("cart.shop")
	cfg.Collector.Identity, cfg.Collector.Tokens = collector.ModeToken, map[string]string{cpToken: id}
	cfg.Auth.Token = []byte(adminToken)
	cfg.XDS.WasmURI = "/etc/meshward/meshward.wasm"
	cfg.TrainEvery = 0
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// driveControlPlane gives every control-plane series of the dashboard a
// reason to exist: records shipped (accepted and rejected), a model
// trained and published, then a second one out as a canary.
func driveControlPlane(t *testing.T, cp *server.Server) {
	ship := func(routes []string, callers []string, bad int) {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		now := time.Now()
		for i := 0; i < 300; i++ {
			r := routes[i%len(routes)]
			rec := record.Record{TSUnixNano: now.Add(time.Duration(i) * time.Millisecond).UnixNano(), Route: r, Score: 0.1,
				Request: models.Request{Method: "GET", Path: strings.ReplaceAll(r, "{num}", strconv.Itoa(i)), Source: callers[i%len(callers)], Destination: "cart.shop"}}
			if err := enc.Encode(rec); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < bad; i++ {
			b.WriteString("{not a record}\n")
		}
		req, _ := http.NewRequest(http.MethodPost, cp.CollectorURL+"/v1/records", strings.NewReader(b.String()))
		req.Header.Set("Authorization", "Bearer "+cpToken)
		req.Header.Set(record.IdempotencyKeyHeader, fmt.Sprintf("dashboard-test-%d-%d", time.Now().UnixNano(), bad))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := map[bool]int{true: 400, false: 200}[bad > 0]; resp.StatusCode != want {
			t.Fatalf("shipping records: %d %s, want %d", resp.StatusCode, body, want)
		}
	}
	ship([]string{"/items/{num}"}, []string{"frontend"}, 0)
	if rep := train(t, cp); !strings.Contains(rep, `"published":true`) || strings.Contains(rep, `"canary":true`) {
		t.Fatalf("first training round: %s, want a model published", rep)
	}
	// More of the same traffic (and two bad lines): the next model has
	// learned more, differs, and goes out as a canary.
	ship([]string{"/items/{num}"}, []string{"frontend"}, 2)
	if rep := train(t, cp); !strings.Contains(rep, `"canary":true`) {
		t.Fatalf("second training round: %s, want a canary", rep)
	}
}

// train runs a training round through the admin API and returns its
// report. (Where the admin API asks for credentials, they go here.)
func train(t *testing.T, cp *server.Server) string {
	req, _ := http.NewRequest(http.MethodPost, cp.AdminURL+"/api/v1/train", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /api/v1/train: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

// controlPlaneJob is the ServiceMonitor's endpoint as a scrape job: the
// admin endpoint's /metrics. Authentication of /metrics (a bearer token
// file) is set here, in BearerTokenFile, and nowhere else.
func controlPlaneJob(t *testing.T, cp *server.Server) promtest.Job {
	var sm struct {
		Spec struct {
			Endpoints []struct {
				Port string `yaml:"port"`
				Path string `yaml:"path"`
			} `yaml:"endpoints"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(read(t, "monitoring/servicemonitor.yaml"), &sm); err != nil {
		t.Fatal(err)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "http-admin" {
		t.Fatalf("the ServiceMonitor scrapes %+v, want the admin port", sm.Spec.Endpoints)
	}
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte(adminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	return promtest.Job{Name: "meshward", MetricsPath: sm.Spec.Endpoints[0].Path, BearerTokenFile: tokenFile,
		Targets: []promtest.Target{{Addr: strings.TrimPrefix(cp.AdminURL, "http://")}}}
}

// filterJob is the PodMonitor's endpoint as a scrape job over the emulated
// pods: its path, honorLabels, relabelings and metric relabelings as the
// Prometheus Operator writes them, each pod a target with the labels
// Kubernetes service discovery gives a pod.
func filterJob(t *testing.T, pods []*envoyPod) promtest.Job {
	var pm struct {
		Spec struct {
			Endpoints []struct {
				Port              string           `yaml:"port"`
				Path              string           `yaml:"path"`
				HonorLabels       bool             `yaml:"honorLabels"`
				Relabelings       []map[string]any `yaml:"relabelings"`
				MetricRelabelings []map[string]any `yaml:"metricRelabelings"`
			} `yaml:"podMetricsEndpoints"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(read(t, "monitoring/podmonitor.yaml"), &pm); err != nil {
		t.Fatal(err)
	}
	if len(pm.Spec.Endpoints) != 1 {
		t.Fatalf("the PodMonitor has %d endpoints, want 1", len(pm.Spec.Endpoints))
	}
	e := pm.Spec.Endpoints[0]
	job := promtest.Job{Name: "meshward-filter", MetricsPath: e.Path, HonorLabels: e.HonorLabels,
		Relabelings: relabelConfigs(t, e.Relabelings), MetricRelabelings: relabelConfigs(t, e.MetricRelabelings)}
	for _, pod := range pods {
		job.Targets = append(job.Targets, promtest.Target{Addr: pod.addr, Labels: pod.discoveryLabels()})
	}
	return job
}

// relabelConfigs translates the Prometheus Operator's RelabelConfig (camel
// case) into Prometheus's relabel_config; a field it does not know fails.
func relabelConfigs(t *testing.T, in []map[string]any) []promtest.Relabel {
	var out []promtest.Relabel
	for _, m := range in {
		var r promtest.Relabel
		for k, v := range m {
			switch k {
			case "sourceLabels":
				for _, l := range v.([]any) {
					r.SourceLabels = append(r.SourceLabels, l.(string))
				}
			case "separator":
				r.Separator = v.(string)
			case "targetLabel":
				r.TargetLabel = v.(string)
			case "regex":
				r.Regex = v.(string)
			case "replacement":
				s := v.(string)
				r.Replacement = &s
			case "action":
				r.Action = strings.ToLower(v.(string))
			default:
				t.Fatalf("relabeling field %q is not translated by this test", k)
			}
		}
		out = append(out, r)
	}
	return out
}

// envoyPod is an emulated meshed pod: its sidecar's /stats/prometheus
// (Envoy's text format: the filter's metrics, which carry no labels, and
// Istio's istio_requests_total with its standard labels and the
// Telemetry's meshward_verdict), growing at every scrape.
type envoyPod struct {
	name, namespace string
	// controllerKind and controllerName are the pod's owner; templateHash
	// its pod-template-hash label (a Deployment's pods).
	controllerKind, controllerName, templateHash string
	canonical                                    string
	// workload is Istio's name for the pod's workload (its
	// destination_workload).
	workload string
	callers  []string
	addr     string
	mu       sync.Mutex
	scrapes  int
}

func emulatedPods(t *testing.T) []*envoyPod {
	pods := []*envoyPod{
		// A Deployment's pod whose canonical name (its app label) is not
		// its workload's name, as in Istio's Bookinfo.
		{name: "reviews-v1-6f8c7d9b5-k2x7q", namespace: "bookinfo", controllerKind: "ReplicaSet", controllerName: "reviews-v1-6f8c7d9b5",
			templateHash: "6f8c7d9b5", canonical: "reviews", workload: "reviews-v1", callers: []string{"productpage-v1"}},
		{name: "cart-7d4b9c8f6-q2w3e", namespace: "shop", controllerKind: "ReplicaSet", controllerName: "cart-7d4b9c8f6",
			templateHash: "7d4b9c8f6", canonical: "cart", workload: "cart", callers: []string{"frontend", "checkout"}},
		// A StatefulSet's pod: the workload is the StatefulSet.
		{name: "ledger-0", namespace: "shop", controllerKind: "StatefulSet", controllerName: "ledger",
			canonical: "ledger", workload: "ledger", callers: []string{"checkout"}},
		// A CronJob's pod: Istio names the CronJob (the Job's name less
		// its schedule suffix).
		{name: "report-29010600-x8p4m", namespace: "jobs", controllerKind: "Job", controllerName: "report-29010600",
			canonical: "report", workload: "report", callers: []string{"scheduler"}},
	}
	for _, p := range pods {
		srv := httptest.NewServer(p)
		t.Cleanup(srv.Close)
		p.addr = strings.TrimPrefix(srv.URL, "http://")
	}
	return pods
}

// discoveryLabels are the labels Kubernetes service discovery (role pod)
// gives the pod's target, which the PodMonitor's relabelings read.
func (p *envoyPod) discoveryLabels() map[string]string {
	ls := map[string]string{
		"__meta_kubernetes_namespace":                                        p.namespace,
		"__meta_kubernetes_pod_name":                                         p.name,
		"__meta_kubernetes_pod_controller_kind":                              p.controllerKind,
		"__meta_kubernetes_pod_controller_name":                              p.controllerName,
		"__meta_kubernetes_pod_label_app":                                    p.canonical,
		"__meta_kubernetes_pod_label_service_istio_io_canonical_name":        p.canonical,
		"__meta_kubernetes_pod_labelpresent_service_istio_io_canonical_name": "true",
		"__meta_kubernetes_pod_container_port_name":                          "http-envoy-prom",
	}
	if p.templateHash != "" {
		ls["__meta_kubernetes_pod_label_pod_template_hash"] = p.templateHash
	}
	return ls
}

// envoyBuckets are the bounds Envoy reports for a histogram by default.
var envoyBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// scoresPerScrape are the scores (permille) the filter observes between two
// scrapes, and how many of each.
var scoresPerScrape = map[float64]int{40: 60, 300: 30, 700: 8, 950: 2}

// ServeHTTP writes the sidecar's stats as Envoy's admin /stats/prometheus
// does: "# TYPE" lines, name{} for a stat without tags, histograms as
// cumulative buckets with le, +Inf, _sum and _count.
func (p *envoyPod) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	p.scrapes++
	n := p.scrapes
	p.mu.Unlock()
	perScrape := map[string]int{
		plugin.MetricRequests: 100, plugin.MetricFlagged: 10, plugin.MetricDenied: 2, plugin.MetricUnscored: 3,
		plugin.MetricConfigRejected: 0, plugin.MetricShipped: 90, plugin.MetricDropped: 1, plugin.MetricUnidentified: 1,
		plugin.MetricUninspected: 4096, plugin.MetricDigestsCapped: 0, plugin.MetricQueryCut: 0,
	}
	var b strings.Builder
	b.WriteString("# TYPE envoy_server_uptime gauge\nenvoy_server_uptime{} " + strconv.Itoa(n) + "\n\n")
	for _, m := range plugin.Metrics {
		if m.Kind != plugin.Counter {
			continue
		}
		rate, ok := perScrape[m.Name]
		if !ok {
			panic("the emulated sidecar has no value for the filter's counter " + m.Name)
		}
		fmt.Fprintf(&b, "# TYPE %s counter\n%s{} %d\n\n", m.Name, m.Name, rate*n)
	}
	verdicts := map[string]struct {
		code string
		rate int
	}{"passed": {"200", 85}, "flagged": {"200", 10}, "denied": {"403", 2}, "quarantined": {"403", 1}}
	b.WriteString("# TYPE istio_requests_total counter\n")
	for _, caller := range p.callers {
		for _, v := range sortedVerdicts(verdicts) {
			fmt.Fprintf(&b, "istio_requests_total{%s} %d\n", p.istioLabels(caller, v, verdicts[v].code), verdicts[v].rate*n)
		}
	}
	b.WriteString("\n")
	for _, m := range plugin.Metrics {
		if m.Kind != plugin.Histogram {
			continue
		}
		fmt.Fprintf(&b, "# TYPE %s histogram\n", m.Name)
		count, sum := 0, 0.0
		for score, k := range scoresPerScrape {
			count += k * n
			sum += score * float64(k*n)
		}
		for _, le := range envoyBuckets {
			below := 0
			for score, k := range scoresPerScrape {
				if score <= le {
					below += k * n
				}
			}
			fmt.Fprintf(&b, "%s_bucket{le=\"%s\"} %d\n", m.Name, strconv.FormatFloat(le, 'g', -1, 64), below)
		}
		fmt.Fprintf(&b, "%s_bucket{le=\"+Inf\"} %d\n%s_sum{} %g\n%s_count{} %d\n\n", m.Name, count, m.Name, sum, m.Name, count)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = io.WriteString(w, b.String())
}

func sortedVerdicts[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// istioLabels are the labels of the server-side istio_requests_total
// series of one caller and verdict: every one of Istio's standard labels
// (istioStandardLabels) and the Telemetry's meshward_verdict.
func (p *envoyPod) istioLabels(caller, verdict, code string) string {
	spiffe := func(ns, sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }
	values := map[string]string{
		"reporter": "destination", "source_workload": caller, "source_workload_namespace": p.namespace,
		"source_principal": spiffe(p.namespace, caller), "source_app": caller, "source_version": "v1",
		"source_canonical_service": caller, "source_canonical_revision": "v1", "source_cluster": "Kubernetes",
		"destination_workload": p.workload, "destination_workload_namespace": p.namespace,
		"destination_principal": spiffe(p.namespace, p.canonical), "destination_app": p.canonical, "destination_version": "v1",
		"destination_service": p.canonical + "." + p.namespace + ".svc.cluster.local", "destination_service_name": p.canonical,
		"destination_service_namespace": p.namespace, "destination_canonical_service": p.canonical,
		"destination_canonical_revision": "v1", "destination_cluster": "Kubernetes", "request_protocol": "http",
		"response_code": code, "grpc_response_status": "", "response_flags": "-", "connection_security_policy": "mutual_tls",
		"meshward_verdict": verdict,
	}
	var parts []string
	for _, l := range append(append([]string{}, istioStandardLabels...), "meshward_verdict") {
		v, ok := values[l]
		if !ok {
			panic("the emulated sidecar has no value for Istio's label " + l)
		}
		parts = append(parts, l+"="+strconv.Quote(v))
	}
	return strings.Join(parts, ",")
}
