package plugin

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

// TestOnlyItsOwnSection: a filter takes its workload's section, or the
// fallback section; another workload's section, a whole-mesh model and an
// older (codec version 6) whole model are each refused with an error that
// says what and whose, and the last good section stays in force.
func TestOnlyItsOwnSection(t *testing.T) {
	own := fixtureModel(t)
	mesh, other, fallback := meshFixture(t)
	v6, err := os.ReadFile("testdata/v6-config.json")
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name   string
		config []byte
		want   []string
	}{
		{"another workload's section", config(t, pluginconfig.ModeEnforce, other), []string{`section is for workload "ratings.shop"`, `this filter serves workload "reviews.shop"`}},
		{"a whole-mesh model", config(t, pluginconfig.ModeEnforce, mesh), []string{"whole-mesh model", "meshward model config -workload"}},
		// A real configuration of the previous release: a whole model, codec
		// version 6, trained on this file's fixture (testdata/v6-config.json).
		{"a version 6 whole model", v6, []string{"codec version 6, this build reads version " + strconv.Itoa(models.CodecVersion), "retrain"}},
	}
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: strictConfig(t, own), props: peer(attacker)})
		for i, c := range refused {
			setPluginConfig(t, host, c.config)
			if st := host.StartPlugin(); st != types.OnPluginStartStatusFailed {
				t.Fatalf("%s: accepted", c.name)
			}
			logs := host.GetCriticalLogs()
			last := logs[len(logs)-1]
			for _, want := range append(c.want, "keeping the previous configuration and model") {
				if !strings.Contains(last, want) {
					t.Errorf("%s: log %q does not say %q", c.name, last, want)
				}
			}
			if n := counter(t, host, MetricConfigRejected); n != uint64(i+1) {
				t.Errorf("%s: %s = %d, want %d", c.name, MetricConfigRejected, n, i+1)
			}
			// The section in force still enforces: an unseen caller is denied.
			if action, _ := request(host, get("/reviews/1")); action != types.ActionPause {
				t.Errorf("%s: after the refusal an unseen caller got %v, want the 403 of the kept section", c.name, action)
			}
		}
		// The fallback section serves any workload.
		setPluginConfig(t, host, config(t, pluginconfig.ModeMonitor, fallback))
		if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
			t.Fatalf("the fallback section was refused: %v", host.GetCriticalLogs())
		}
		if action, _ := request(host, get("/reviews/1")); action != types.ActionContinue {
			t.Errorf("monitor with the fallback section: %v", action)
		}
	})
}

// meshFixture trains a two-workload model and returns it whole, the section
// of the other workload (ratings.shop) and the fallback section.
func meshFixture(t *testing.T) (mesh, other, fallback []byte) {
	t.Helper()
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(1_700_000_000, 0)
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		tr.Observe(&models.Request{Method: "GET", Path: "/reviews/1", Source: frontend, Destination: workload})
		tr.Observe(&models.Request{Method: "GET", Path: "/ratings/1", Source: frontend, Destination: "ratings.shop"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	if mesh, err = models.Encode(m); err != nil {
		t.Fatal(err)
	}
	if other, err = models.EncodeSection(m, "ratings.shop"); err != nil {
		t.Fatal(err)
	}
	if fallback, err = models.EncodeSection(m, "nobody.shop"); err != nil {
		t.Fatal(err)
	}
	return mesh, other, fallback
}
