package runner

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"
	"github.com/tetratelabs/wazero"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/filter/wasmhost"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

// Wasm scores through the compiled filter (build/meshward.wasm) in monitor
// mode, on goabi's standalone host (wazerohost.Standalone): the proxy-wasm
// ABI implemented directly against the module, with its state in the value,
// so that one VM per core runs in parallel (the SDK's emulator keeps its
// state in globals and runs one VM at a time). The verdict is read back from
// the score and reason headers the filter adds, exactly as an upstream would
// see them (scores have three decimals). Each workload's plugin is configured
// as its sidecar would be: with its own section of the model (the fallback
// section for a workload without one). Results are in input order, whatever
// the parallelism.
type Wasm struct {
	wasm      []byte
	cache     wazero.CompilationCache
	model     *models.Model
	threshold *float64
	profile   wazerohost.Profile
	// Workers is how many VMs score in parallel (default: one per CPU, at
	// most maxWorkers).
	Workers int
	// Enforce, when set before Run, configures the filter in enforce mode
	// with these deny_reasons and exceptions: a denied request is the
	// filter's own 403.
	Enforce *Enforce

	mu       sync.Mutex
	vms      []*vm             // idle VMs, kept across runs
	sections map[string]string // base64 of each workload's section, encoded once
}

// vm is one VM with the plugins started in it, one per workload: a
// plugin's start (parsing its configuration, decoding and indexing the model)
// costs milliseconds in WebAssembly, so it is paid once per workload and VM,
// not once per run.
type vm struct {
	*wazerohost.Standalone
	roots map[string]uint32
}

// maxWorkers bounds the VMs of one runner.
const maxWorkers = 4

// NewWasm loads the compiled filter at path, to score with m (a whole model:
// each workload's plugin gets its section of it) on hosts that answer as the
// profile says. A threshold of 0 keeps the model's own.
func NewWasm(path string, m *models.Model, threshold float64, profile wazerohost.Profile) (*Wasm, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	w := &Wasm{wasm: b, cache: wasmhost.CompilationCache(), Workers: min(runtime.GOMAXPROCS(0), maxWorkers), model: m, sections: map[string]string{}, profile: profile}
	if threshold != 0 {
		w.threshold = &threshold
	}
	// Compile and instantiate now, so that a broken module fails here, not
	// in Run, and Run finds its VMs ready.
	for len(w.vms) < w.Workers {
		v, err := w.newVM()
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		w.vms = append(w.vms, v)
	}
	return w, nil
}

// Name implements Runner.
func (*Wasm) Name() string { return "wasm" }

// Close implements Runner.
func (w *Wasm) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range w.vms {
		v.Close()
	}
	w.vms = nil
	return nil // the compilation cache is the process's (wasmhost.CompilationCache): it stays open
}

// propSAN is the property the filter reads the caller's identity from.
const propSAN = "connection\x00uri_san_peer_certificate"

func (w *Wasm) newVM() (*vm, error) {
	s, err := wazerohost.NewStandalone(w.wasm, w.cache, map[string][]byte{}, w.profile)
	if err != nil {
		return nil, err
	}
	return &vm{Standalone: s, roots: map[string]uint32{}}, nil
}

func (w *Wasm) takeVM() (*vm, error) {
	w.mu.Lock()
	if n := len(w.vms); n > 0 {
		v := w.vms[n-1]
		w.vms = w.vms[:n-1]
		w.mu.Unlock()
		return v, nil
	}
	w.mu.Unlock()
	return w.newVM()
}

func (w *Wasm) putVM(v *vm) {
	w.mu.Lock()
	w.vms = append(w.vms, v)
	w.mu.Unlock()
}

// Run implements Runner. The filter serves one workload per configuration,
// as in a sidecar, so records are scored in groups by destination (a plugin
// configured for each), the groups spread over the VMs.
func (w *Wasm) Run(recs []*source.Record) ([]Result, error) {
	byDst := map[string][]int{}
	var dsts []string
	for i, r := range recs {
		d := r.Request.Destination
		if _, ok := byDst[d]; !ok {
			dsts = append(dsts, d)
		}
		byDst[d] = append(byDst[d], i)
	}
	// Largest groups first, so the VMs finish together.
	sort.Slice(dsts, func(a, b int) bool {
		if la, lb := len(byDst[dsts[a]]), len(byDst[dsts[b]]); la != lb {
			return la > lb
		}
		return dsts[a] < dsts[b]
	})
	out := make([]Result, len(recs))
	work := make(chan string, len(dsts))
	for _, d := range dsts {
		work <- d
	}
	close(work)
	workers := max(1, min(w.Workers, len(dsts)))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for k := 0; k < workers; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			v, err := w.takeVM()
			if err != nil {
				errs[k] = err
				return
			}
			defer w.putVM(v)
			for d := range work {
				if err := w.runWorkload(v, d, recs, byDst[d], out); err != nil {
					errs[k] = err
					return
				}
			}
		}(k)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (w *Wasm) runWorkload(vm *vm, dst string, recs []*source.Record, idx []int, out []Result) error {
	workload := dst
	if workload == "" {
		workload = source.DefaultDestination
	}
	root, ok := vm.roots[workload]
	if !ok {
		section, err := w.section(workload)
		if err != nil {
			return err
		}
		c := pluginconfig.Config{Mode: pluginconfig.ModeMonitor, Workload: workload, Model: section, Threshold: w.threshold, ResponseScore: true}
		if k := w.model.ValueKey(); k.Set() {
			// The filter digests values with the key the model was given.
			c.ValueKey = k.Hex()
		}
		if w.Enforce != nil {
			c.Mode, c.DenyReasons, c.Exceptions = pluginconfig.ModeEnforce, w.Enforce.DenyReasons, w.Enforce.rulesFor(workload)
		}
		cfg, err := c.Encode()
		if err != nil {
			return err
		}
		if root, err = vm.Start(cfg); err != nil {
			return fmt.Errorf("%s: %w", workload, err)
		}
		vm.roots[workload] = root
	}
	var st wazerohost.Stream
	var reqHeaders, respHeaders [][2]string
	for _, i := range idx {
		r := &recs[i].Request
		vm.SetPropertyString(propSAN, r.Source)
		target := r.Path
		if r.Query != "" {
			target += "?" + r.Query
		}
		reqHeaders = append(reqHeaders[:0], [2]string{":method", r.Method}, [2]string{":path", target}, [2]string{":authority", workload})
		for _, h := range r.Headers {
			reqHeaders = append(reqHeaders, [2]string{strings.ToLower(h.Name), h.Value})
		}
		st = wazerohost.Stream{RequestHeaders: reqHeaders, RequestBody: r.Body}
		if r.Status != 0 {
			respHeaders = append(respHeaders[:0], [2]string{":status", strconv.Itoa(r.Status)})
			if r.ResponseBytes > 0 {
				respHeaders = append(respHeaders, [2]string{"content-length", strconv.FormatInt(r.ResponseBytes, 10)})
			}
			st.ResponseHeaders = respHeaders
		}
		vm.Do(root, &st)
		if st.LocalResponse != 0 {
			out[i] = deniedOf(st.LocalResponse, st.LocalHeaders)
			out[i].Enforcing = true
			reqHeaders, respHeaders = st.RequestHeaders, st.ResponseHeaders
			continue
		}
		// With a known response, the final verdict is on the response.
		verdict := st.RequestHeaders
		if st.ResponseHeaders != nil {
			verdict = st.ResponseHeaders
		}
		out[i] = verdictOf(verdict)
		out[i].Enforcing = w.Enforce != nil
		// The maps may have grown; keep their arrays for the next request.
		reqHeaders, respHeaders = st.RequestHeaders, st.ResponseHeaders
	}
	return nil
}

// deniedOf reads the 403 the filter sent in enforce mode: its score, its
// reasons and the reason it denied for (x-meshward-denied).
func deniedOf(status uint32, headers [][2]string) Result {
	res := verdictOf(headers)
	res.Flagged, res.Enforcing = true, true
	for _, h := range headers {
		if h[0] == "x-meshward-denied" {
			res.DenyReason = h[1]
		}
	}
	res.Denied = status == 403
	return res
}

// verdictOf reads the filter's verdict from the headers it left on the
// request or response: the score header and, when flagged, the reasons.
func verdictOf(headers [][2]string) Result {
	var res Result
	for _, h := range headers {
		switch h[0] {
		case pluginconfig.DefaultScoreHeader:
			res.Score, _ = strconv.ParseFloat(h[1], 64)
			res.Scored = true
		case "x-meshward-reason":
			res.Flagged = true
			res.Reasons = strings.Split(h[1], ",")
		}
	}
	return res
}

// section returns a workload's section of the model, base64, encoding it
// the first time.
func (w *Wasm) section(workload string) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s, ok := w.sections[workload]; ok {
		return s, nil
	}
	b, err := models.EncodeSection(w.model, workload)
	if err != nil {
		return "", err
	}
	s := (&pluginconfig.Config{}).WithModel(b).Model
	w.sections[workload] = s
	return s, nil
}
