package plugin

import (
	"strings"
	"testing"

	"github.com/meshward/meshward/filter/pluginconfig"
)

// TestGarbageIsCollectedOutsideRequests: compiled to WebAssembly, the filter
// collects garbage itself (gc_wasip1.go): once after a configuration, and on
// a tick only once enough has been allocated since, and at the end of a
// stream after a burst. Natively the Go
// runtime's collector runs on its own, so only the .wasm environments run
// this test.
func TestGarbageIsCollectedOutsideRequests(t *testing.T) {
	for _, e := range envs {
		if e.name == "native" {
			continue
		}
		t.Run(e.name, func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: shipConfig(t, pluginconfig.ModeLearn, 100_000), props: peer(frontend)})
			collections := func(why string) int {
				n := 0
				for _, l := range host.GetDebugLogs() {
					if strings.Contains(l, "collected garbage ("+why+")") {
						n++
					}
				}
				return n
			}
			if n := collections("configuration"); n != 1 {
				t.Fatalf("%d collections after the configuration, want 1; debug logs: %q", n, host.GetDebugLogs())
			}
			host.Tick()
			if n := collections("tick"); n != 0 {
				t.Fatalf("%d collections on a tick with next to nothing allocated, want 0", n)
			}
			// Learn mode ships each body's shape: 1,200 records of about
			// 6 KiB are more than the least budget (gcBudgetMin, 4 MiB)
			// between collections.
			body := []byte(strings.Repeat("a=1&", 1024))
			for i := 0; i < 1200; i++ {
				id := host.InitializeHttpContext()
				host.CallOnRequestHeaders(id, [][2]string{{":method", "POST"}, {":path", "/reviews"}, {":authority", workload}}, false)
				host.CallOnRequestBody(id, body, true)
				host.CompleteHttpContext(id)
			}
			if n := collections("tick"); n != 0 {
				t.Fatalf("%d collections during requests, want 0 (only ticks collect)", n)
			}
			host.Tick()
			if n := collections("tick"); n != 1 {
				t.Fatalf("%d collections on the tick after 1,200 bodies, want 1", n)
			}
			host.Tick()
			if n := collections("tick"); n != 1 {
				t.Fatalf("%d collections after one more idle tick, want still 1", n)
			}
			// A burst far above the budget before the next tick is collected
			// at the end of a stream (never inside an allocation: there is
			// no memory limit to trip one).
			for i := 0; i < 10_000; i++ {
				id := host.InitializeHttpContext()
				host.CallOnRequestHeaders(id, [][2]string{{":method", "POST"}, {":path", "/reviews"}, {":authority", workload}}, false)
				host.CallOnRequestBody(id, body, true)
				host.CompleteHttpContext(id)
			}
			if n := collections("burst"); n < 1 {
				t.Fatalf("no collection after a 40 MB burst between ticks")
			}
		})
	}
}
