package plugin

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/filter/wasmhost"
)

// benchHeaders is a typical mesh request: a handful of headers and an id in
// the path, from a known caller.
var benchHeaders = [][2]string{
	{":method", "GET"}, {":path", "/reviews/12345?lang=en"}, {":authority", "reviews.shop.svc.cluster.local"},
	{":scheme", "http"}, {"user-agent", "Go-http-client/1.1"}, {"accept", "application/json"},
	{"x-request-id", "0b0c5a8e-9a4f-4a2e-8f58-0d7cfa0c1a6b"}, {"x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"},
	{"x-forwarded-proto", "http"},
}

var (
	passthroughOnce sync.Once
	passthroughPath string
	passthroughVMs  = map[string]types.VMContext{}
	passthroughErr  error
)

// passthroughWasm loads the do-nothing plugin built exactly like the filter
// ($MESHWARD_PASSTHROUGH_WASM, else a fresh build) on proxytest's binding
// (profile "") or on goabi's direct one under a host profile.
func passthroughWasm(b *testing.B, profile wazerohost.Profile) types.VMContext {
	passthroughOnce.Do(func() {
		path := os.Getenv("MESHWARD_PASSTHROUGH_WASM")
		if path == "" {
			dir, err := os.MkdirTemp("", "meshward-passthrough")
			if err != nil {
				passthroughErr = err
				return
			}
			defer os.RemoveAll(dir)
			path = filepath.Join(os.TempDir(), "meshward-bench-passthrough.wasm")
			passthroughErr = buildWasm(path, "../internal/passthrough")
		}
		passthroughPath = path
	})
	if passthroughErr != nil {
		b.Fatal(passthroughErr)
	}
	if vm, ok := passthroughVMs[string(profile)]; ok {
		return vm
	}
	var vm types.VMContext
	var err error
	if profile == "" {
		vm, err = wasmhost.LoadVM(passthroughPath)
	} else {
		vm, err = wasmhost.LoadDirect(passthroughPath, profile)
	}
	if err != nil {
		b.Fatal(err)
	}
	passthroughVMs[string(profile)] = vm
	return vm
}

// benchBody is the body of the large-request benchmark: a 64 KiB form
// (the default max_body_bytes), as a proxy hands it on in 16 KiB chunks.
var benchBody = func() [][]byte {
	pair := "stars=4&text=loved+it&"
	b := []byte(strings.Repeat(pair, (64<<10)/len(pair)+1)[:64<<10])
	var chunks [][]byte
	for len(b) > 0 {
		n := min(len(b), 16<<10)
		chunks, b = append(chunks, b[:n]), b[n:]
	}
	return chunks
}()

// benchPost is the large request's headers.
var benchPost = [][2]string{
	{":method", "POST"}, {":path", "/reviews"}, {":authority", "reviews.shop.svc.cluster.local"},
	{":scheme", "http"}, {"user-agent", "Go-http-client/1.1"}, {"accept", "application/json"},
	{"content-type", "application/x-www-form-urlencoded"}, {"x-request-id", "0b0c5a8e-9a4f-4a2e-8f58-0d7cfa0c1a6b"},
}

// perRequest measures n requests through an emulated proxy, after
// warmRequests untimed ones: for each, a new stream, its request headers,
// and its end. It returns the wall time and the
// calling thread's CPU time (the caller locks its thread).
func perRequest(b *testing.B, vm types.VMContext, config []byte, n int) (wall, cpu time.Duration) {
	return serveRequests(b, vm, config, n, false)
}

// serveRequests is perRequest, of the typical request (benchHeaders) or,
// with body, of the 64 KiB form (benchPost, benchBody).
func serveRequests(b *testing.B, vm types.VMContext, config []byte, n int, body bool) (wall, cpu time.Duration) {
	opt := proxytest.NewEmulatorOption().WithVMContext(vm).WithPluginConfiguration(config).
		WithProperty([]string{"connection", "uri_san_peer_certificate"}, []byte(frontend))
	host, reset := proxytest.NewHostEmulator(opt)
	defer reset()
	if host.StartPlugin() != types.OnPluginStartStatusOK {
		b.Fatalf("plugin refused its configuration: %v", host.GetCriticalLogs())
	}
	answered := 0
	serve := func(n int) {
		for i := 0; i < n; i++ {
			id := host.InitializeHttpContext()
			if !body {
				if host.CallOnRequestHeaders(id, benchHeaders, true) != types.ActionContinue {
					b.Fatal("request not continued")
				}
			} else {
				host.CallOnRequestHeaders(id, benchPost, false)
				var a types.Action
				for k, c := range benchBody {
					a = host.CallOnRequestBody(id, c, k == len(benchBody)-1)
				}
				if a != types.ActionContinue {
					b.Fatal("request not continued")
				}
			}
			host.CompleteHttpContext(id)
			// As in a proxy: the plugin ticks (1 s) and ships its records,
			// and the collector answers.
			if i%1000 == 999 {
				host.Tick()
				calls := host.GetCalloutAttributesFromContext(proxytest.PluginContextID)
				for ; answered < len(calls); answered++ {
					host.CallOnHttpCallResponse(calls[answered].CalloutID, [][2]string{{":status", "200"}}, nil, nil)
				}
			}
		}
	}
	// A freshly started plugin fills its pools (stream contexts, header
	// slices, host buffers) on its first requests; a proxy serves for hours.
	// Those are served before the clock starts, so the figure is the steady
	// state.
	serve(warmRequests)
	start, cpu0 := time.Now(), threadCPU()
	serve(n)
	return time.Since(start), threadCPU() - cpu0
}

// warmRequests are served, untimed, by each freshly started plugin.
const warmRequests = 200

// benchConfig is the benchmarks' configuration: monitor mode, the fixture
// model, records shipped (5 %) with digests of short values, as the
// manifests install it (value_key).
func benchConfig(b *testing.B) []byte {
	c := pluginconfig.Config{Mode: pluginconfig.ModeMonitor, Workload: workload, CollectorCluster: "meshward-collector",
		ValueKey: "00112233445566778899aabbccddeeff"}
	c.WithModel(fixtureModel(b))
	doc, err := c.Encode()
	if err != nil {
		b.Fatal(err)
	}
	return doc
}

// BenchmarkRequest reports the filter's cost per request (monitor mode,
// scored against the fixture model) natively and as .wasm, and beside the
// latter a pass-through plugin built the same way, so that own-ns/op is the
// filter's cost on top of what any Go proxy-wasm plugin pays. "wasm-sdk"
// runs on proxytest's wazero wrapper, whose host calls are reflective and
// which re-creates the guest allocator function for every buffer it copies
// in (several µs per host call that returns data); "wasm-envoy-*" run the
// same files on goabi's lean binding, closer to what a native host charges,
// under each Envoy host profile; they also report the guest's linear memory
// at the end (guest-MiB).
func BenchmarkRequest(b *testing.B) {
	cfg := benchConfig(b)
	b.Run("native", func(b *testing.B) {
		b.ReportAllocs()
		_, _ = perRequest(b, &vmContext{}, cfg, b.N)
	})
	b.Run("wasm-sdk", func(b *testing.B) {
		ownCost(b, sharedWasmVM(b), passthroughWasm(b, ""), cfg)
	})
	for _, e := range profileEnvs() {
		p := wazerohost.Profile(strings.TrimPrefix(e.name, "wasm-"))
		b.Run(e.name, func(b *testing.B) {
			vm := e.newVM(b)
			ownCost(b, vm, passthroughWasm(b, p), cfg)
			if m, ok := vm.(interface{ MemoryBytes() uint64 }); ok {
				b.ReportMetric(float64(m.MemoryBytes())/(1<<20), "guest-MiB")
			}
		})
	}
}

// BenchmarkRequestBody64K is BenchmarkRequest for a POST of a 64 KiB form
// (the default max_body_bytes), read as it passes in four 16 KiB chunks,
// the proxy buffering it (in the emulator) while the filter reads it.
func BenchmarkRequestBody64K(b *testing.B) {
	cfg := benchConfig(b)
	b.Run("native", func(b *testing.B) {
		b.ReportAllocs()
		_, _ = serveRequests(b, &vmContext{}, cfg, b.N, true)
	})
	for _, e := range profileEnvs() {
		p := wazerohost.Profile(strings.TrimPrefix(e.name, "wasm-"))
		b.Run(e.name, func(b *testing.B) {
			ownCostOf(b, e.newVM(b), passthroughWasm(b, p), cfg, true)
		})
	}
}

// ownCost reports the filter's and the pass-through's wall time per request
// and their difference (own-ns/op), and the same difference in the
// benchmark thread's CPU time (own-cpu-ns/op, Linux only): the wasm runs on
// the calling goroutine, so on a machine other jobs share, CPU time is the
// steadier figure.
//
// The two plugins take turns, in rounds of at most ownRound requests, each
// round in a freshly started (and warmed) plugin: a drift in the machine's
// speed then weighs on both alike, and the difference averages over several
// layouts of the guest's heap (a single run varies by about ±10 %).
func ownCost(b *testing.B, filterVM, passVM types.VMContext, cfg []byte) {
	ownCostOf(b, filterVM, passVM, cfg, false)
}

// ownCostOf is ownCost of the typical request or, with body, of the 64 KiB
// form.
func ownCostOf(b *testing.B, filterVM, passVM types.VMContext, cfg []byte, body bool) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ResetTimer()
	var filter, filterCPU, pass, passCPU time.Duration
	for done := 0; done < b.N; {
		n := min(ownRound, b.N-done)
		w, c := serveRequests(b, filterVM, cfg, n, body)
		filter, filterCPU = filter+w, filterCPU+c
		w, c = serveRequests(b, passVM, nil, n, body)
		pass, passCPU = pass+w, passCPU+c
		done += n
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(filter.Nanoseconds())/n, "filter-ns/op")
	b.ReportMetric(float64(pass.Nanoseconds())/n, "passthrough-ns/op")
	b.ReportMetric(float64((filter-pass).Nanoseconds())/n, "own-ns/op")
	if filterCPU > 0 {
		b.ReportMetric(float64((filterCPU-passCPU).Nanoseconds())/n, "own-cpu-ns/op")
	}
}

// ownRound is the most requests each plugin serves in one turn of ownCost.
const ownRound = 2000

// BenchmarkRequestPaired compares the own cost of several builds of the
// filter in one process, round by round: $MESHWARD_PAIRED_WASM lists the
// .wasm files, and each of b.N rounds serves ownRound typical requests
// through each file (envoy-1.33 profile, the pass-through after each), in
// an order that rotates every round. It logs, for each file, its mean own
// cost in thread CPU time and the median (and quartiles) of its rounds'
// ratios to the first file's: neighbouring runs in one process drift far
// less than runs in separate processes (hack/bench-ab.sh), so the median
// of many rounds resolves differences of a few per cent, where separate
// runs vary by ±10 %. Every
// file must accept this revision's configuration and model
// (hack/bench-pair.sh builds revisions into such files).
func BenchmarkRequestPaired(b *testing.B) {
	paths := strings.Fields(os.Getenv("MESHWARD_PAIRED_WASM"))
	if len(paths) < 2 {
		b.Skip("set MESHWARD_PAIRED_WASM to two or more .wasm files (see hack/bench-pair.sh)")
	}
	const profile = wazerohost.Profile("envoy-1.33")
	vms := make([]types.VMContext, len(paths))
	for i, p := range paths {
		vm, err := wasmhost.LoadDirect(p, profile)
		if err != nil {
			b.Fatalf("%s: %v", p, err)
		}
		vms[i] = vm
	}
	pass := passthroughWasm(b, profile)
	cfg := benchConfig(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	k := len(vms)
	sums := make([]float64, k)
	ratios := make([][]float64, k)
	own := make([]float64, k)
	b.ResetTimer()
	for r := 0; r < b.N; r++ {
		for j := 0; j < k; j++ {
			i := (j + r) % k
			_, c := serveRequests(b, vms[i], cfg, ownRound, false)
			_, p := serveRequests(b, pass, nil, ownRound, false)
			own[i] = float64((c - p).Nanoseconds()) / ownRound
			sums[i] += own[i]
		}
		for i := 1; i < k; i++ {
			ratios[i] = append(ratios[i], own[i]/own[0])
		}
	}
	b.StopTimer()
	for i, p := range paths {
		if i == 0 {
			b.Logf("%s: own cost %.0f ns per request (thread CPU, mean of %d rounds)", p, sums[i]/float64(b.N), b.N)
			continue
		}
		q := ratios[i]
		slices.Sort(q)
		b.Logf("%s: own cost %.0f ns; ratio to the first, round by round: median %.3f (quartiles %.3f–%.3f)",
			p, sums[i]/float64(b.N), q[len(q)/2], q[len(q)/4], q[3*len(q)/4])
	}
}
