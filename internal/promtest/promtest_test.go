package promtest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A real prometheus scrapes a target with a bearer token and relabelings,
// and its series answer queries through the HTTP API; a target that
// refuses the token is reported down.
func TestScrapeAndQuery(t *testing.T) {
	const token = "promtest-token-0123456789"
	var scrapes atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		n := scrapes.Add(1)
		fmt.Fprintf(w, "# TYPE demo_total counter\ndemo_total{} %d\n# TYPE dropped_total counter\ndropped_total{} 1\n", n)
	}))
	t.Cleanup(target.Close)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(target.URL, "http://")
	keep := "demo_.*"
	p := Start(t, Config{Jobs: []Job{
		{Name: "with-token", BearerTokenFile: tokenFile,
			Targets:           []Target{{Addr: addr, Labels: map[string]string{"__meta_pod": "cart-7f9"}}},
			Relabelings:       []Relabel{{SourceLabels: []string{"__meta_pod"}, Regex: "(.+)-[^-]+", TargetLabel: "workload"}},
			MetricRelabelings: []Relabel{{SourceLabels: []string{"__name__"}, Regex: keep, Action: "keep"}}},
		{Name: "without-token", Targets: []Target{{Addr: addr}}},
	}})
	Eventually(t, 20*time.Second, "two scrapes with the token", func() error {
		v, err := p.QueryErr(`rate(demo_total[10s])`)
		if err != nil {
			return err
		}
		if len(v) != 1 || v[0].Value <= 0 {
			return fmt.Errorf("rate: %v", v)
		}
		return nil
	})
	v := p.Query(t, `demo_total`)
	if len(v) != 1 || v[0].Metric["workload"] != "cart" || v[0].Metric["job"] != "with-token" || v[0].Metric["__meta_pod"] != "" {
		t.Errorf("series %v: want the relabelled workload=cart, job with-token, no __meta label", v)
	}
	if v := p.Query(t, `dropped_total`); len(v) != 0 {
		t.Errorf("the metric relabeling kept %v", v)
	}
	if got := p.LabelValues(t, "workload", "demo_total"); strings.Join(got, ",") != "cart" {
		t.Errorf("label values: %v", got)
	}
	err := p.TargetsUp()
	if err == nil || !strings.Contains(err.Error(), "without-token") || strings.Contains(err.Error(), "job with-token") {
		t.Errorf("targets: %v (want only the job without the token down)", err)
	}
	if _, err := p.QueryErr(`sum(rate(demo_total[5m])`); err == nil {
		t.Error("a broken query gave no error")
	}
	if v := p.Query(t, `up{job="without-token"}`); len(v) != 1 || v[0].Value != 0 {
		t.Errorf("up of the refused target: %v", v)
	}
}

// The configuration refuses a job without targets, naming it.
func TestConfigRefusesEmptyJob(t *testing.T) {
	_, err := Config{Jobs: []Job{{Name: "empty"}}}.YAML()
	if err == nil || !strings.Contains(err.Error(), `"empty"`) {
		t.Errorf("job without targets: %v", err)
	}
}

// fatal records the message of a Fatalf and ends the goroutine, as
// testing.T does.
type fatal struct {
	testing.TB
	msg string
}

func (f *fatal) Helper() {}
func (f *fatal) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Without the binary the test fails and says how to install it; nothing
// is skipped.
func TestMissingBinarySaysMakeDeps(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := &fatal{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); Start(f, Config{}) }()
	<-done
	if !strings.Contains(f.msg, "make deps") {
		t.Errorf("missing prometheus: %q", f.msg)
	}
}
