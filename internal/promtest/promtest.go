// Package promtest runs a real Prometheus for tests: Debian's prometheus
// (installed by `make deps`) on a free loopback port, with a generated
// configuration and a temporary storage directory, stopped and removed when
// the test ends. Queries go through Prometheus's HTTP API with
// client_golang's API client. A missing binary fails the test: Prometheus's
// behaviour is never faked.
package promtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// Config is what the server scrapes and how often.
type Config struct {
	// ScrapeInterval is every job's scrape interval and timeout (default
	// DefaultScrapeInterval); EvaluationInterval is the rules' (default
	// the scrape interval).
	ScrapeInterval, EvaluationInterval time.Duration
	// Jobs are the scrape jobs.
	Jobs []Job
	// RuleFiles are rule files to load (absolute paths).
	RuleFiles []string
}

// DefaultScrapeInterval is short so that rate() over a few seconds of a
// test has samples to work with.
const DefaultScrapeInterval = 250 * time.Millisecond

// Job is one scrape job, in Prometheus's own terms.
type Job struct {
	Name string
	// MetricsPath defaults to /metrics.
	MetricsPath string
	// HonorLabels keeps the scraped series' labels where they clash with
	// the target's.
	HonorLabels bool
	// BearerTokenFile, when set, is sent as "Authorization: Bearer" with
	// every scrape (the file is read at each scrape).
	BearerTokenFile string
	Targets         []Target
	// Relabelings apply to the targets' labels before the scrape;
	// MetricRelabelings to the scraped series.
	Relabelings, MetricRelabelings []Relabel
}

// Target is one host:port to scrape and its labels (labels starting with
// __ are seen by Relabelings only, as service discovery's are).
type Target struct {
	Addr   string
	Labels map[string]string
}

// Relabel is one relabel_config; empty fields take Prometheus's defaults
// (action replace, regex (.*), replacement $1, separator ;).
type Relabel struct {
	SourceLabels []string `yaml:"source_labels,omitempty"`
	Separator    string   `yaml:"separator,omitempty"`
	TargetLabel  string   `yaml:"target_label,omitempty"`
	Regex        string   `yaml:"regex,omitempty"`
	Replacement  *string  `yaml:"replacement,omitempty"`
	Action       string   `yaml:"action,omitempty"`
}

// Server is a running prometheus.
type Server struct {
	// URL is the server's base URL (http://127.0.0.1:port).
	URL string
	// API is a client of its HTTP API.
	API promv1.API
	cmd *exec.Cmd
	// exited is closed when the process has exited; err is Wait's result.
	exited chan struct{}
	err    error
	log    string
}

// Start writes the configuration, starts prometheus on a free loopback
// port and waits until it reports ready. A missing binary fails the test
// with the command that installs it.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is not installed: run `make deps` (it installs Debian's prometheus package): %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	body, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, body, 0o600); err != nil {
		t.Fatal(err)
	}
	// The port is free when chosen but may be taken before prometheus
	// binds it: try again on another.
	var s *Server
	for attempt := 0; ; attempt++ {
		s, err = start(bin, conf, dir, freePort(t))
		if err == nil || attempt == 2 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("prometheus log (%s):\n%s", s.log, tail(s.log, 40))
		}
	})
	return s
}

func start(bin, conf, dir string, port int) (*Server, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logPath := filepath.Join(dir, "prometheus-"+strconv.Itoa(port)+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=info")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting prometheus: %w", err)
	}
	s := &Server{URL: "http://" + addr, cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() { s.err = cmd.Wait(); close(s.exited) }()
	c, err := api.NewClient(api.Config{Address: s.URL})
	if err != nil {
		s.stop()
		return nil, err
	}
	s.API = promv1.NewAPI(c)
	// Ready means the storage is open and the configuration loaded.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("prometheus exited before it was ready (%v):\n%s", s.err, tail(logPath, 20))
		case <-time.After(50 * time.Millisecond): // polling interval
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("prometheus on %s not ready within 30 s:\n%s", addr, tail(logPath, 20))
		}
	}
}

// stop ends prometheus (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (s *Server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// YAML is the configuration file prometheus is given.
func (c Config) YAML() ([]byte, error) {
	interval := c.ScrapeInterval
	if interval == 0 {
		interval = DefaultScrapeInterval
	}
	eval := c.EvaluationInterval
	if eval == 0 {
		eval = interval
	}
	type staticConfig struct {
		Targets []string          `yaml:"targets"`
		Labels  map[string]string `yaml:"labels,omitempty"`
	}
	type authorization struct {
		CredentialsFile string `yaml:"credentials_file"`
	}
	type scrapeConfig struct {
		JobName              string         `yaml:"job_name"`
		MetricsPath          string         `yaml:"metrics_path,omitempty"`
		HonorLabels          bool           `yaml:"honor_labels,omitempty"`
		Authorization        *authorization `yaml:"authorization,omitempty"`
		StaticConfigs        []staticConfig `yaml:"static_configs"`
		RelabelConfigs       []Relabel      `yaml:"relabel_configs,omitempty"`
		MetricRelabelConfigs []Relabel      `yaml:"metric_relabel_configs,omitempty"`
	}
	doc := struct {
		Global struct {
			ScrapeInterval     string `yaml:"scrape_interval"`
			ScrapeTimeout      string `yaml:"scrape_timeout"`
			EvaluationInterval string `yaml:"evaluation_interval"`
		} `yaml:"global"`
		RuleFiles     []string       `yaml:"rule_files,omitempty"`
		ScrapeConfigs []scrapeConfig `yaml:"scrape_configs"`
	}{RuleFiles: c.RuleFiles}
	doc.Global.ScrapeInterval, doc.Global.ScrapeTimeout, doc.Global.EvaluationInterval = model.Duration(interval).String(), model.Duration(interval).String(), model.Duration(eval).String()
	var errs []error
	for _, j := range c.Jobs {
		if j.Name == "" || len(j.Targets) == 0 {
			errs = append(errs, fmt.Errorf("promtest: job %q needs a name and targets", j.Name))
		}
		sc := scrapeConfig{JobName: j.Name, MetricsPath: j.MetricsPath, HonorLabels: j.HonorLabels,
			RelabelConfigs: j.Relabelings, MetricRelabelConfigs: j.MetricRelabelings}
		if j.BearerTokenFile != "" {
			sc.Authorization = &authorization{CredentialsFile: j.BearerTokenFile}
		}
		for _, tg := range j.Targets {
			sc.StaticConfigs = append(sc.StaticConfigs, staticConfig{Targets: []string{tg.Addr}, Labels: tg.Labels})
		}
		doc.ScrapeConfigs = append(doc.ScrapeConfigs, sc)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return yaml.Marshal(doc)
}

// Query evaluates an instant query now and returns its series. A query
// that fails, or that returns something other than a vector, fails the
// test.
func (s *Server) Query(t testing.TB, expr string) model.Vector {
	t.Helper()
	v, err := s.QueryErr(expr)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// QueryErr is Query returning its error.
func (s *Server) QueryErr(expr string) (model.Vector, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, warnings, err := s.API.Query(ctx, expr, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	if len(warnings) > 0 {
		return nil, fmt.Errorf("query %q: warnings %v", expr, warnings)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %q returned a %s, not a vector", expr, v.Type())
	}
	return vec, nil
}

// LabelValues returns the values of a label on the series matching the
// selectors (all series without one), as Grafana's label_values() asks.
func (s *Server) LabelValues(t testing.TB, label string, match ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vals, _, err := s.API.LabelValues(ctx, label, match, time.Time{}, time.Time{})
	if err != nil {
		t.Fatalf("label values of %s%v: %v", label, match, err)
	}
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		out = append(out, string(v))
	}
	sort.Strings(out)
	return out
}

// TargetsUp returns nil once every configured target was scraped and is up;
// otherwise an error naming those that are not.
func (s *Server) TargetsUp() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.API.Targets(ctx)
	if err != nil {
		return err
	}
	if len(res.Active) == 0 {
		return errors.New("no active targets")
	}
	var errs []error
	for _, a := range res.Active {
		if a.Health != promv1.HealthGood {
			errs = append(errs, fmt.Errorf("target %s of job %s is %s: %s", a.ScrapeURL, a.Labels["job"], a.Health, a.LastError))
		}
	}
	return errors.Join(errs...)
}

// Eventually polls cond every 100 ms until it returns nil, and fails the
// test with cond's last error when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
