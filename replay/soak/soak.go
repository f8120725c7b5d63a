// Package soak runs the compiled filter for a long time the way Envoy does,
// on a host profile that answers WASI calls as that Envoy's Wasm host does:
// one VM per worker thread, a new root context for every configuration
// update (the old one done and deleted), a tick per simulated second that
// ships records to a collector which sometimes pushes back, and requests all
// along. It counts what would take a proxy's VM down — traps — and how the
// guest's linear memory grows. `make soak` runs it in full; the tests run it
// at a size that keeps the suite fast.
package soak

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"
	"github.com/tetratelabs/wazero"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/filter/wasmhost"
	"github.com/meshward/meshward/replay/source"
)

// Config is one soak. Defaults in DefaultConfig.
type Config struct {
	// Profile is the host the VMs run on.
	Profile wazerohost.Profile
	// VMs is how many VMs run the module at once (Envoy's worker threads).
	VMs int
	// Requests is how many requests each VM serves.
	Requests int
	// Updates is how many configuration updates each VM receives, spread
	// evenly over its requests; they cycle through Configs.
	Updates int
	// TickEvery is how many requests make one simulated second: a tick
	// follows each.
	TickEvery int
	// RefuseEvery makes the collector answer 503 to every n-th batch (0:
	// never).
	RefuseEvery int
	// Configs are the plugin configurations the updates cycle through; the
	// first is also the initial one.
	Configs [][]byte
	// Traffic is the requests, cycled; VM k starts at offset k, so workers
	// see different requests, as an Envoy's workers see different
	// connections.
	Traffic []*source.Record
	// Workload is the :authority the requests carry.
	Workload string
	// StopAfterTraps ends a VM's run after that many traps (0: never), for
	// a soak that only has to show a crash.
	StopAfterTraps int
}

// DefaultConfig returns the full soak's defaults (configurations and
// traffic are the caller's).
func DefaultConfig() Config {
	return Config{Profile: wazerohost.DefaultProfile, VMs: 2, Requests: 500_000, Updates: 100, TickEvery: 1000, RefuseEvery: 7}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if _, err := wazerohost.ParseProfile(string(c.Profile)); err != nil {
		errs = append(errs, err)
	}
	if c.VMs < 1 || c.VMs > 64 {
		errs = append(errs, fmt.Errorf("vms: %d is not in [1,64]", c.VMs))
	}
	if c.Requests < 1 || c.Updates < 0 || c.Updates > c.Requests {
		errs = append(errs, fmt.Errorf("requests %d must be positive and updates %d in [0,requests]", c.Requests, c.Updates))
	}
	if c.TickEvery < 1 || c.RefuseEvery < 0 {
		errs = append(errs, fmt.Errorf("tick_every %d must be positive, refuse_every %d not negative", c.TickEvery, c.RefuseEvery))
	}
	if len(c.Configs) == 0 || len(c.Traffic) == 0 || c.Workload == "" {
		errs = append(errs, errors.New("configs, traffic and workload are required"))
	}
	return errors.Join(errs...)
}

// Report is what a soak saw, summed over its VMs.
type Report struct {
	Requests int
	// Scored requests carried the filter's score header upstream;
	// Unscored did not (an internal error let them through); Learned were
	// served under a learn-mode configuration, which scores nothing.
	Scored, Unscored, Learned int
	// Traps counts the calls into the module that trapped (each would have
	// taken an Envoy VM down); TrapsInRequests those of a request, which
	// then went upstream unscored. Trapped holds the first trap's message
	// and the module's last standard-error lines.
	Traps, TrapsInRequests int
	Trapped                []string
	// Updates counts the configurations started, Refused those the filter
	// refused.
	Updates, Refused int
	// Collections counts the garbage collections the filter logged.
	Collections int
	// Batches counts the batches shipped, by the collector's answer;
	// Records the records the collector took.
	Batches map[int]int
	Records int
	// Memory is each VM's linear memory, in bytes, after each update: the
	// guest's footprint over time.
	Memory [][]uint64
}

// Run runs a soak of the compiled module wasm.
func Run(wasm []byte, c Config) (*Report, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cache := wasmhost.CompilationCache() // the process's: it stays open
	reps := make([]*Report, c.VMs)
	errs := make([]error, c.VMs)
	var wg sync.WaitGroup
	for k := range c.VMs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[k], errs[k] = runVM(wasm, cache, c, k)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := &Report{Batches: map[int]int{}}
	for _, r := range reps {
		out.Requests += r.Requests
		out.Scored += r.Scored
		out.Unscored += r.Unscored
		out.Learned += r.Learned
		out.Traps += r.Traps
		out.TrapsInRequests += r.TrapsInRequests
		if len(out.Trapped) == 0 {
			out.Trapped = r.Trapped
		}
		out.Updates += r.Updates
		out.Refused += r.Refused
		out.Collections += r.Collections
		for code, n := range r.Batches {
			out.Batches[code] += n
		}
		out.Records += r.Records
		out.Memory = append(out.Memory, r.Memory[0])
	}
	return out, nil
}

// worker is one VM and its plugin, as one Envoy worker thread holds them.
type worker struct {
	c     Config
	wasm  []byte
	cache wazero.CompilationCache
	vm    *wazerohost.Standalone
	root  uint32
	rep   *Report
	cfg   []byte
	batch int
	// learning: the configuration in force is in learn mode.
	learning bool
}

func runVM(wasm []byte, cache wazero.CompilationCache, c Config, k int) (*Report, error) {
	w := &worker{c: c, wasm: wasm, cache: cache, rep: &Report{Batches: map[int]int{}, Memory: [][]uint64{nil}}, cfg: c.Configs[0]}
	if err := w.load(); err != nil {
		return nil, err
	}
	defer func() { w.vm.Close() }()
	// Update j (1 … Updates) comes after j/(Updates+1) of the requests.
	next := 1
	var st wazerohost.Stream
	var headers [][2]string
	for i := 0; i < c.Requests; i++ {
		if next <= c.Updates && i == next*c.Requests/(c.Updates+1) {
			w.cfg = c.Configs[next%len(c.Configs)]
			next++
			if err := w.update(); err != nil {
				return nil, err
			}
		}
		r := &c.Traffic[(k+i*c.VMs)%len(c.Traffic)].Request
		w.vm.SetPropertyString("connection\x00uri_san_peer_certificate", r.Source)
		target := r.Path
		if r.Query != "" {
			target += "?" + r.Query
		}
		headers = append(headers[:0], [2]string{":method", r.Method}, [2]string{":path", target}, [2]string{":authority", c.Workload})
		for _, h := range r.Headers {
			headers = append(headers, [2]string{strings.ToLower(h.Name), h.Value})
		}
		st = wazerohost.Stream{RequestHeaders: headers, RequestBody: r.Body}
		if r.Status != 0 {
			st.ResponseHeaders = [][2]string{{":status", strconv.Itoa(r.Status)}}
		}
		w.rep.Requests++
		if w.guard(func() { w.vm.Do(w.root, &st) }) {
			w.rep.TrapsInRequests++
			w.rep.Unscored++
			if err := w.reload(); err != nil {
				return nil, err
			}
		} else if _, ok := header(st.RequestHeaders, pluginconfig.DefaultScoreHeader); ok {
			w.rep.Scored++
		} else if w.learning {
			w.rep.Learned++
		} else {
			w.rep.Unscored++
		}
		headers = st.RequestHeaders
		if c.StopAfterTraps > 0 && w.rep.Traps >= c.StopAfterTraps {
			break
		}
		if (i+1)%c.TickEvery == 0 {
			if err := w.tick(); err != nil {
				return nil, err
			}
		}
	}
	w.rep.Memory[0] = append(w.rep.Memory[0], w.vm.MemoryBytes())
	return w.rep, nil
}

// load starts a VM and the current configuration in it.
func (w *worker) load() error {
	vm, err := wazerohost.NewStandalone(w.wasm, w.cache, map[string][]byte{}, w.c.Profile)
	if err != nil {
		return err
	}
	vm.OnLog = func(_ int, msg string) {
		if strings.HasPrefix(msg, "meshward: collected garbage") {
			w.rep.Collections++
		}
	}
	w.vm = vm
	w.root = 0
	return w.update()
}

// update starts the current configuration in a new root context and then
// ends the old one, as Envoy does on a configuration update.
func (w *worker) update() error {
	var root uint32
	var err error
	if w.guard(func() { root, err = w.vm.Start(w.cfg) }) {
		return w.reload()
	}
	w.rep.Updates++
	if err != nil {
		// A refused configuration keeps the previous plugin in force.
		w.rep.Refused++
		return nil
	}
	if old := w.root; old != 0 {
		if w.guard(func() { w.vm.Stop(old) }) {
			return w.reload()
		}
	}
	w.root = root
	var mode struct{ Mode pluginconfig.Mode }
	_ = json.Unmarshal(w.cfg, &mode)
	w.learning = mode.Mode == "" || mode.Mode == pluginconfig.ModeLearn
	w.rep.Memory[0] = append(w.rep.Memory[0], w.vm.MemoryBytes())
	return nil
}

// reload replaces a VM that trapped with a fresh one, as Envoy's
// FAIL_RELOAD policy does.
func (w *worker) reload() error {
	w.vm.Close()
	return w.load()
}

// tick fires the plugin's timer and answers the batches it ships.
func (w *worker) tick() error {
	if w.guard(func() { w.vm.Tick(w.root) }) {
		return w.reload()
	}
	for _, call := range w.vm.Callouts() {
		w.batch++
		status := 200
		if w.c.RefuseEvery > 0 && w.batch%w.c.RefuseEvery == 0 {
			status = 503
		} else {
			w.rep.Records += countLines(call.Body)
		}
		w.rep.Batches[status]++
		if w.guard(func() { w.vm.Respond(call, status, nil, nil) }) {
			return w.reload()
		}
	}
	return nil
}

// guard runs a call into the module and reports whether it trapped.
func (w *worker) guard(fn func()) (trapped bool) {
	defer func() {
		if r := recover(); r != nil {
			trapped = true
			w.rep.Traps++
			if len(w.rep.Trapped) == 0 {
				w.rep.Trapped = []string{fmt.Sprint(r), w.vm.Stderr()}
			}
		}
	}()
	fn()
	return false
}

func countLines(b []byte) int {
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) > 0 {
			n++
		}
	}
	return n
}

func header(hs [][2]string, name string) (string, bool) {
	for _, h := range hs {
		if h[0] == name {
			return h[1], true
		}
	}
	return "", false
}
