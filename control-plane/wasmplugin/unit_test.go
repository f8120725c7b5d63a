package wasmplugin

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

func TestParseRef(t *testing.T) {
	if ns, n, err := ParseRef("default/meshward"); err != nil || ns != "default" || n != "meshward" {
		t.Errorf("default/meshward: %q %q %v", ns, n, err)
	}
	for _, bad := range []string{"", "meshward", "/meshward", "default/", "a/b/c"} {
		if _, _, err := ParseRef(bad); err == nil || !strings.Contains(err.Error(), "want namespace/name") {
			t.Errorf("%q: got %v, want an error", bad, err)
		}
	}
}

// section is a real section of a small model, for workload.
func section(t testing.TB, workload string) []byte {
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(0, 0)
	tr, _ := models.NewTrainer(cfg)
	for i := 0; i < 100; i++ {
		tr.Observe(&models.Request{Method: "GET", Path: "/r", Source: "a", Destination: workload})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	b, err := models.EncodeSection(m, workload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOwnedConfiguration: a workload's pluginConfig is the template's keys,
// the base's, the workload and its section; learn mode without a section;
// what the filter's parser refuses (a collector without a token, another
// workload's section) is refused before any call to the API server.
func TestOwnedConfiguration(t *testing.T) {
	w, err := NewForClients(Config{Namespace: "default", Name: "meshward"}, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tpl := map[string]any{"mode": "monitor", "sample_rate": 0.05, "model": "stale", "workload": "stale"}
	pc, err := w.owned(tpl, "reviews.shop", section(t, "reviews.shop"))
	if err != nil {
		t.Fatal(err)
	}
	if pc["mode"] != "monitor" || pc["sample_rate"] != 0.05 || pc["workload"] != "reviews.shop" || pc["model"] == "stale" {
		t.Errorf("owned %v", pc)
	}
	if pc, err := w.owned(tpl, "reviews.shop", nil); err != nil || pc["mode"] != "learn" || pc["model"] != nil {
		t.Errorf("without a section: %v %v, want learn mode and no model", pc, err)
	}
	if _, err := w.owned(tpl, "ratings.shop", section(t, "reviews.shop")); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `section is for workload "reviews.shop"`) {
		t.Errorf("another workload's section: %v", err)
	}
	// A credential in the configuration: the filter refuses it, and the
	// writer never writes it.
	bad, _ := NewForClients(Config{Namespace: "default", Name: "meshward", Base: pluginconfig.Config{CollectorCluster: "outbound|9090||c", CollectorToken: strings.Repeat("t", 32)}}, nil, nil, nil, slog.New(slog.DiscardHandler))
	if _, err := bad.owned(tpl, "reviews.shop", section(t, "reviews.shop")); !errors.Is(err, ErrRefused) || !errors.Is(err, pluginconfig.ErrCollectorCluster) {
		t.Errorf("a configuration carrying a collector token: %v", err)
	}
}

// TestNames: object names and label values stay valid whatever the
// workload's name.
func TestNames(t *testing.T) {
	if n := objectName("meshward", "reviews"); n != "meshward-reviews" {
		t.Errorf("name %q", n)
	}
	long := strings.Repeat("a", 300)
	if n := objectName("meshward", long); len(n) > 253 || !validName(n) || n == objectName("meshward", long+"b") {
		t.Errorf("long name %q", n)
	}
	if v := labelValue(long); len(v) > 63 || !validLabel(v) {
		t.Errorf("long label %q", v)
	}
	if v := labelValue("reviews.shop"); v != "reviews.shop" {
		t.Errorf("label %q", v)
	}
}

// TestModeOverlayOnlyLowers: a workload's mode overlay (serve
// -filter-learn-first's readiness) sets learn or monitor under the
// template's mode, never above it, and never without a model (owned has a
// workload without one learn already).
func TestModeOverlayOnlyLowers(t *testing.T) {
	w, err := NewForClients(Config{Namespace: "default", Name: "meshward"}, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		template, overlay, want pluginconfig.Mode
	}{
		{"enforce", "learn", "learn"},
		{"enforce", "monitor", "monitor"},
		{"enforce", "", "enforce"},
		{"monitor", "learn", "learn"},
		{"monitor", "enforce", "monitor"}, // above the template: ignored
		{"learn", "monitor", "learn"},
		{"", "monitor", ""}, // the filter's default, learn
		{"monitor", "bogus", "monitor"},
	} {
		s := &Syncer{W: w, Mode: func(string, pluginconfig.Mode) pluginconfig.Mode { return c.overlay }}
		tpl := map[string]any{}
		if c.template != "" {
			tpl["mode"] = string(c.template)
		}
		pc, err := w.owned(tpl, "reviews.shop", section(t, "reviews.shop"))
		if err == nil {
			pc, err = s.withOverlay(pc, "reviews.shop")
		}
		if err != nil {
			t.Fatalf("template %q, overlay %q: %v", c.template, c.overlay, err)
		}
		if got, _ := pc["mode"].(string); got != string(c.want) {
			t.Errorf("template %q, overlay %q: mode %q, want %q", c.template, c.overlay, got, c.want)
		}
	}
	// Without a model the workload learns, whatever the overlay says.
	s := &Syncer{W: w, Mode: func(string, pluginconfig.Mode) pluginconfig.Mode { return pluginconfig.ModeMonitor }}
	pc, err := w.owned(map[string]any{"mode": "enforce"}, "reviews.shop", nil)
	if err == nil {
		pc, err = s.withOverlay(pc, "reviews.shop")
	}
	if err != nil || pc["mode"] != "learn" {
		t.Errorf("without a model: %v %v, want learn", pc["mode"], err)
	}
}
