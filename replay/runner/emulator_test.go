package runner

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/filter/wasmhost"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/gen"
	"github.com/meshward/meshward/replay/source"
)

// sdkEmulatorRun scores records the way the wasm runner did before it had a
// host of its own (and emulated sidecars still do): the same compiled filter
// under the SDK's host emulator (proxytest), one destination at a time. It is
// the reference the standalone host is checked against.
func sdkEmulatorRun(t *testing.T, m *models.Model, recs []*source.Record, profile wazerohost.Profile) []Result {
	t.Helper()
	vm, err := wasmhost.LoadDirect(wasmPath, profile)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	out := make([]Result, len(recs))
	byDst := map[string][]int{}
	for i, r := range recs {
		byDst[r.Request.Destination] = append(byDst[r.Request.Destination], i)
	}
	for dst, idx := range byDst {
		workload := dst
		if workload == "" {
			workload = source.DefaultDestination
		}
		section, err := models.EncodeSection(m, workload)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := (&pluginconfig.Config{Mode: pluginconfig.ModeMonitor, Workload: workload, ResponseScore: true}).WithModel(section).Encode()
		if err != nil {
			t.Fatal(err)
		}
		host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(vm).WithPluginConfiguration(cfg))
		if host.StartPlugin() != types.OnPluginStartStatusOK {
			reset()
			t.Fatalf("the filter refused its configuration for %s: %v", workload, host.GetCriticalLogs())
		}
		for _, i := range idx {
			res, err := serveRequest(host, workload, &recs[i].Request)
			if err != nil {
				t.Fatal(err)
			}
			out[i] = res
		}
		reset()
	}
	return out
}

// The wasm runner's standalone host (parallel VMs) gives exactly what the
// SDK's emulator gives for the same compiled filter: every score, flag and
// reason, in order, on generated mesh traffic with bodies, queries,
// responses and attacks.
func TestStandaloneHostMatchesSDKEmulator(t *testing.T) {
	cfg := gen.DefaultConfig()
	cfg.Requests = 3000
	g, err := gen.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	recs := g.Generate()
	tcfg := models.DefaultTrainConfig()
	tcfg.Now = time.Unix(0, 0)
	tr, _ := models.NewTrainer(tcfg)
	for _, r := range recs[:len(recs)/2] {
		if !r.IsAttack() {
			tr.Observe(&r.Request)
		}
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	forEachProfile(t, func(t *testing.T, profile wazerohost.Profile) { standaloneMatchesSDK(t, m, recs, profile) })
}

func standaloneMatchesSDK(t *testing.T, m *models.Model, recs []*source.Record, profile wazerohost.Profile) {
	want := sdkEmulatorRun(t, m, recs, profile)
	w, err := NewWasm(wasmPath, m, 0, profile)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Workers = 2
	for run := 0; run < 2; run++ { // a second run reuses the VMs
		got, err := w.Run(recs)
		if err != nil {
			t.Fatal(err)
		}
		flagged, scored := 0, 0
		for i := range recs {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("run %d, record %d (%s %s %s): standalone %+v, SDK emulator %+v", run, i, recs[i].Request.Destination, recs[i].Request.Method, recs[i].Request.Path, got[i], want[i])
			}
			if got[i].Flagged {
				flagged++
			}
			if got[i].Scored {
				scored++
			}
		}
		if scored != len(recs) || flagged == 0 {
			t.Fatalf("run %d: %d of %d scored, %d flagged: the comparison saw no verdicts", run, scored, len(recs), flagged)
		}
	}
}

// A configuration the filter refuses stops the run with the filter's own
// explanation, not a trap or wrong scores.
func TestWasmRunnerReportsARefusedConfiguration(t *testing.T) {
	train, replay := traffic()
	tr, _ := models.NewTrainer(models.DefaultTrainConfig())
	for _, r := range train {
		tr.Observe(&r.Request)
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	forEachProfile(t, func(t *testing.T, profile wazerohost.Profile) {
		w, err := NewWasm(wasmPath, m, 1.5, profile) // a threshold must lie in (0,1]
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		_, err = w.Run(replay)
		if err == nil || !strings.Contains(err.Error(), "threshold") {
			t.Fatalf("got %v, want the filter's refusal naming the threshold", err)
		}
	})
}
