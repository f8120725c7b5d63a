//go:build wasip1

package plugin

import (
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
)

// The filter schedules its own garbage collection.
//
// Compiled to WebAssembly, the Go runtime has one thread and runs no
// goroutine between the host's callbacks. A collection that starts on its
// own (an allocation crosses the heap goal) is then marked only by the
// assists of later allocations, and the filter hardly allocates: its mark
// phase lasts for a very long time, with the write barrier on for every
// pointer the filter stores. Requests then cost about a third more (in
// make bench, runs caught in such a phase measured 8–9 µs of own cost
// against 6; see BenchmarkRequest).
//
// So automatic collection is off, and the filter collects at points of its
// choosing, outside requests, where runtime.GC runs a whole cycle at once:
// after each configuration (decoding a model leaves megabytes of garbage),
// on a tick once enough has been allocated since the last collection, and
// at the end of a stream when a burst between two ticks allocated far more.
//
// There is deliberately no memory limit: a limit makes the runtime start a
// collection inside whichever allocation crosses it, and that may be one
// the host asked for (proxy_on_memory_allocate, to copy a configuration or
// a header map in). Envoy's host allows only proxy_log, fd_write and
// clock_time_get during such an allocation, and a collection ends by
// polling the runtime's timers (poll_oneoff): in V8 that traps
// (restricted_callback). With the percent off and no limit, the runtime
// never collects on its own.
func init() { debug.SetGCPercent(-1) }

// gcBudgetMin is the least allocation between two collections on ticks;
// the budget grows with the live heap (a quarter of it).
const gcBudgetMin = 4 << 20

// gcBurst is how many budgets a burst of streams may allocate between two
// ticks before the end of a stream collects; gcCheckEvery is how many
// streams pass between two looks at the allocation count.
const (
	gcBurst      = 8
	gcCheckEvery = 256
)

// collector tracks allocation since the filter's last collection.
type collector struct {
	// samples reads the bytes allocated so far and the live heap.
	samples   [2]rtmetrics.Sample
	allocated uint64 // bytes allocated at the last collection
	budget    uint64
	streams   int // streams ended since the last look at the count
}

// collect runs a whole collection now and sets the next budget and the
// memory limit from the live heap it leaves.
func (c *collector) collect(why string) {
	runtime.GC()
	c.read()
	live := c.samples[1].Value.Uint64()
	c.allocated = c.samples[0].Value.Uint64()
	c.budget = max(gcBudgetMin, live/4)
	c.streams = 0
	proxywasm.LogDebugf("meshward: collected garbage (%s): %d bytes live", why, live)
}

// streamDone collects, every gcCheckEvery streams, when the streams since
// the last collection allocated more than gcBurst budgets: a burst the next
// tick would come too late for.
func (c *collector) streamDone() {
	if c.streams++; c.streams < gcCheckEvery {
		return
	}
	c.streams = 0
	c.read()
	if c.samples[0].Value.Uint64()-c.allocated >= gcBurst*c.budget {
		c.collect("burst")
	}
}

// tick collects when the allocation since the last collection exceeds the
// budget.
func (c *collector) tick() {
	c.read()
	if c.samples[0].Value.Uint64()-c.allocated >= c.budget {
		c.collect("tick")
	}
}

func (c *collector) read() {
	if c.samples[0].Name == "" {
		c.samples[0].Name = "/gc/heap/allocs:bytes"
		c.samples[1].Name = "/gc/heap/live:bytes"
	}
	rtmetrics.Read(c.samples[:])
}
