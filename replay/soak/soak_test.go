package soak

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/filter/wasmbuild"
	"github.com/meshward/meshward/filter/wasmhost"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/gen"
	"github.com/meshward/meshward/replay/source"
)

// The full soak (make soak) sets these; the suite runs a smaller one.
var (
	soakRequests = flag.Int("soak.requests", 12_000, "requests per VM")
	soakUpdates  = flag.Int("soak.updates", 60, "configuration updates per VM")
)

// workload is the sidecar's workload in every soak.
const workload = "catalog.shop"

var (
	fixtureOnce sync.Once
	fixture     struct {
		small, large, learn []byte // plugin configurations
		traffic             []*source.Record
		err                 error
	}
)

// fixtures are the soak's configurations — the workload's section of a
// model of the generated shop, its section of a 400-service mesh where
// every service calls it (many times larger), and learn mode without a
// model — and its traffic: the generated shop's requests, attacks included.
func fixtures(t testing.TB) (small, large, learn []byte, traffic []*source.Record) {
	t.Helper()
	fixtureOnce.Do(func() {
		shop, err := generate(gen.DefaultConfig())
		if err != nil {
			fixture.err = err
			return
		}
		fixture.traffic = shop
		big := gen.DefaultConfig()
		big.Graph = meshGraph(400)
		big.Requests = 120_000
		mesh, err := generate(big)
		if err != nil {
			fixture.err = err
			return
		}
		if fixture.small, err = monitorConfig(shop); err != nil {
			fixture.err = err
			return
		}
		if fixture.large, err = monitorConfig(mesh); err != nil {
			fixture.err = err
			return
		}
		all := 1.0
		fixture.learn, fixture.err = (&pluginconfig.Config{Mode: pluginconfig.ModeLearn, Workload: workload,
			CollectorCluster: "meshward-collector", SampleRate: &all}).Encode()
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return fixture.small, fixture.large, fixture.learn, fixture.traffic
}

func generate(c gen.Config) ([]*source.Record, error) {
	g, err := gen.New(c)
	if err != nil {
		return nil, err
	}
	return g.Generate(), nil
}

// meshGraph is a service graph of n services, each calling three others
// and the soak's workload (catalog).
func meshGraph(n int) map[string][]string {
	g := map[string][]string{}
	for i := range n {
		name := func(j int) string { return fmt.Sprintf("svc-%03d", j%n) }
		g[name(i)] = []string{name(i + 1), name(i + 7), name(i + 31), "catalog"}
	}
	return g
}

// monitorConfig trains on the normal requests and returns the monitor-mode
// configuration of the soak's workload, shipping every record.
func monitorConfig(recs []*source.Record) ([]byte, error) {
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(1_700_000_000, 0)
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if !r.IsAttack() {
			tr.Observe(&r.Request)
		}
	}
	m, err := tr.Model()
	if err != nil {
		return nil, err
	}
	enc, err := models.EncodeSection(m, workload)
	if err != nil {
		return nil, err
	}
	all := 1.0
	return (&pluginconfig.Config{Mode: pluginconfig.ModeMonitor, Workload: workload, CollectorCluster: "meshward-collector",
		SampleRate: &all}).WithModel(enc).Encode()
}

func wasmFile(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(wasmPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var wasmPath string

func TestMain(m *testing.M) {
	flag.Parse()
	wasmPath = os.Getenv("MESHWARD_WASM")
	if wasmPath == "" {
		dir, err := os.MkdirTemp("", "meshward-soak")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		wasmPath = filepath.Join(dir, "meshward.wasm")
		if err := wasmbuild.Build(wasmPath, "../../filter", wasmbuild.Options{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func soakConfig(t testing.TB, p wazerohost.Profile) Config {
	small, large, learn, traffic := fixtures(t)
	t.Logf("configurations: %d, %d and %d bytes", len(small), len(large), len(learn))
	c := DefaultConfig()
	c.Profile = p
	c.Requests, c.Updates = *soakRequests, *soakUpdates
	c.TickEvery = 100
	c.Configs = [][]byte{small, large, learn, large}
	c.Traffic, c.Workload = traffic, workload
	return c
}

// On every Envoy host profile the filter survives a soak: requests all
// along, configuration updates cycling through a small section, one twice
// as large and learn mode without a model (a new root context each, the
// old one done and deleted), a tick
// per simulated second shipping to a collector that pushes back now and
// then, many garbage collections — and no trap, every request scored, the
// guest's memory steady.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs in make test and make soak, not under -short (make unit)")
	}
	wasm := wasmFile(t)
	for _, p := range wazerohost.Profiles {
		t.Run(string(p), func(t *testing.T) {
			c := soakConfig(t, p)
			rep, err := Run(wasm, c)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d requests, %d updates (%d refused), %d collections, batches %v, %d records, memory %v",
				p, rep.Requests, rep.Updates, rep.Refused, rep.Collections, rep.Batches, rep.Records, mib(rep.Memory))
			if rep.Traps > 0 {
				t.Fatalf("%d traps (%d in requests): %s", rep.Traps, rep.TrapsInRequests, strings.Join(rep.Trapped, "\n"))
			}
			if rep.Scored+rep.Learned != rep.Requests || rep.Unscored != 0 || rep.Scored == 0 || rep.Learned == 0 {
				t.Errorf("%d of %d requests scored, %d learned (learn mode), %d unscored", rep.Scored, rep.Requests, rep.Learned, rep.Unscored)
			}
			if want := c.VMs * (c.Updates + 1); rep.Updates != want || rep.Refused != 0 {
				t.Errorf("%d configurations started (%d refused), want %d", rep.Updates, rep.Refused, want)
			}
			if rep.Collections < 50 {
				t.Errorf("%d garbage collections, want at least 50", rep.Collections)
			}
			if rep.Batches[503] == 0 || rep.Batches[200] == 0 || rep.Records == 0 {
				t.Errorf("batches %v, %d records taken: the collector's push-back was not exercised", rep.Batches, rep.Records)
			}
			for k, m := range rep.Memory {
				if err := steady(m); err != nil {
					t.Errorf("VM %d: %v (memory after each update: %v)", k, err, mib([][]uint64{m}))
				}
			}
		})
	}
}

// steady checks that linear memory stopped growing: over the second half
// of the run it grew by at most one step of Go's heap (4 MiB), while the
// same models kept being swapped in.
func steady(m []uint64) error {
	if len(m) < 4 {
		return fmt.Errorf("only %d memory readings", len(m))
	}
	mid, last := m[len(m)/2], m[len(m)-1]
	if last > mid+4<<20 {
		return fmt.Errorf("linear memory grew from %.1f to %.1f MiB over the second half", float64(mid)/(1<<20), float64(last)/(1<<20))
	}
	return nil
}

func mib(ms [][]uint64) string {
	var b strings.Builder
	for k, m := range ms {
		if k > 0 {
			b.WriteString("; ")
		}
		if len(m) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%.1f → %.1f MiB", float64(m[0])/(1<<20), float64(m[len(m)-1])/(1<<20))
	}
	return b.String()
}

// The envoy-1.33 profile is faithful enough to reproduce the crash it
// exists for: the filter built with Go's runtime as it is traps in a soak
// (poll_oneoff answered ENOSYS, on which the runtime throws), and the same
// build survives on envoy-1.39, whose host answers poll_oneoff.
func TestUnpatchedRuntimeTrapsOnEnvoy133(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and soaks an unpatched filter: make test runs it, not -short (make unit)")
	}
	out := filepath.Join(t.TempDir(), "unpatched.wasm")
	if err := wasmbuild.Build(out, "../../filter", wasmbuild.Options{Unpatched: true}); err != nil {
		t.Fatal(err)
	}
	wasm, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	c := soakConfig(t, wazerohost.Envoy133)
	c.StopAfterTraps = 1
	rep, err := Run(wasm, c)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Traps == 0 {
		t.Fatalf("the unpatched runtime survived %d requests and %d collections on envoy-1.33: the profile no longer reproduces golang/go#78513", rep.Requests, rep.Collections)
	}
	if msg := strings.Join(rep.Trapped, "\n"); !strings.Contains(msg, "poll_oneoff") {
		t.Errorf("trapped, but not on poll_oneoff:\n%s", msg)
	}
	t.Logf("unpatched on envoy-1.33: %d traps in %d requests; first: %s", rep.Traps, rep.Requests, strings.Join(rep.Trapped, " | "))
	c.Profile, c.StopAfterTraps = wazerohost.Envoy139, 0
	if rep, err = Run(wasm, c); err != nil {
		t.Fatal(err)
	}
	if rep.Traps > 0 {
		t.Errorf("unpatched on envoy-1.39: %d traps: %s", rep.Traps, strings.Join(rep.Trapped, "\n"))
	}
}

// Envoy runs one VM per worker thread, configured alike, each serving the
// connections its thread accepted. Four such VMs give every request the
// verdict one VM alone gives it, and between them ship every request's
// record exactly once.
func TestWorkersAgree(t *testing.T) {
	small, _, _, traffic := fixtures(t)
	wasm := wasmFile(t)
	const workers, n = 4, 4000
	for _, p := range wazerohost.Profiles {
		if testing.Short() && p != wazerohost.Envoy133 {
			continue // -short (make unit): the strictest profile; make test runs all
		}
		t.Run(string(p), func(t *testing.T) {
			cache := wasmhost.CompilationCache()
			start := func() (*wazerohost.Standalone, uint32) {
				vm, err := wazerohost.NewStandalone(wasm, cache, map[string][]byte{}, p)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { vm.Close() })
				root, err := vm.Start(small)
				if err != nil {
					t.Fatal(err)
				}
				return vm, root
			}
			// The response's size tells the records apart: request i's is
			// i+1 bytes, and records carry it as it is.
			serve := func(vm *wazerohost.Standalone, root uint32, i int) string {
				r := &traffic[i%len(traffic)].Request
				vm.SetPropertyString("connection\x00uri_san_peer_certificate", r.Source)
				target := r.Path
				if r.Query != "" {
					target += "?" + r.Query
				}
				hs := [][2]string{{":method", r.Method}, {":path", target}, {":authority", workload}}
				for _, h := range r.Headers {
					hs = append(hs, [2]string{strings.ToLower(h.Name), h.Value})
				}
				st := wazerohost.Stream{RequestHeaders: hs, RequestBody: r.Body,
					ResponseHeaders: [][2]string{{":status", "200"}, {"content-length", strconv.Itoa(i + 1)}}}
				vm.Do(root, &st)
				score, _ := header(st.RequestHeaders, pluginconfig.DefaultScoreHeader)
				reason, _ := header(st.RequestHeaders, "x-meshward-reason")
				return score + " " + reason
			}
			shipped := map[int64]int{}
			drain := func(vm *wazerohost.Standalone, root uint32) {
				for quiet := 0; quiet < 3; {
					vm.Tick(root)
					calls := vm.Callouts()
					if len(calls) == 0 {
						quiet++
					}
					for _, c := range calls {
						sc := bufio.NewScanner(bytes.NewReader(c.Body))
						sc.Buffer(nil, 1<<20)
						for sc.Scan() {
							var rec struct{ Request struct{ ResponseBytes int64 } }
							if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
								t.Fatalf("shipped record %q: %v", sc.Bytes(), err)
							}
							shipped[rec.Request.ResponseBytes]++
						}
						vm.Respond(c, 200, nil, nil)
					}
				}
			}
			ref, refRoot := start()
			want := make([]string, n)
			for i := range n {
				want[i] = serve(ref, refRoot, i)
			}
			vms := make([]*wazerohost.Standalone, workers)
			roots := make([]uint32, workers)
			for k := range vms {
				vms[k], roots[k] = start()
			}
			flagged := 0
			for i := range n {
				k := (i * 7) % workers // connections land on workers unevenly
				if got := serve(vms[k], roots[k], i); got != want[i] {
					t.Fatalf("request %d: worker %d says %q, one VM alone %q", i, k, got, want[i])
				}
				if strings.TrimSpace(strings.SplitN(want[i], " ", 2)[1]) != "" {
					flagged++
				}
				if i%500 == 499 {
					drain(vms[k], roots[k])
				}
			}
			for k := range vms {
				drain(vms[k], roots[k])
			}
			if flagged == 0 || flagged == n {
				t.Errorf("%d of %d requests flagged: the comparison saw no difference between verdicts", flagged, n)
			}
			for i := range n {
				if c := shipped[int64(i+1)]; c != 1 {
					t.Errorf("request %d's record was shipped %d times, want once", i, c)
				}
			}
			if len(shipped) != n {
				t.Errorf("%d distinct records shipped for %d requests", len(shipped), n)
			}
		})
	}
}

// BenchmarkGuestMemory reports the guest's linear memory per VM, steady,
// with a 50-service mesh's model: 40,000 of that mesh's requests and 20
// configuration updates on one VM, under each Envoy host profile.
func BenchmarkGuestMemory(b *testing.B) {
	c := gen.DefaultConfig()
	c.Graph = meshGraph(50)
	c.Requests = 100_000
	mesh, err := generate(c)
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := monitorConfig(mesh)
	if err != nil {
		b.Fatal(err)
	}
	wasm := wasmFile(b)
	for _, p := range wazerohost.Profiles {
		b.Run(string(p), func(b *testing.B) {
			var last uint64
			for range b.N {
				sc := DefaultConfig()
				sc.Profile, sc.VMs, sc.Requests, sc.Updates, sc.TickEvery = p, 1, 40_000, 20, 100
				sc.Configs, sc.Traffic, sc.Workload = [][]byte{cfg}, mesh, workload
				rep, err := Run(wasm, sc)
				if err != nil {
					b.Fatal(err)
				}
				if rep.Traps > 0 {
					b.Fatalf("%d traps: %s", rep.Traps, strings.Join(rep.Trapped, "\n"))
				}
				m := rep.Memory[0]
				last = m[len(m)-1]
			}
			b.ReportMetric(float64(len(cfg))/1024, "config-KiB")
			b.ReportMetric(float64(last)/(1<<20), "guest-MiB")
		})
	}
}
