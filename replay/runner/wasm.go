package runner

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/filter/wasmhost"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

// Wasm scores through the compiled filter (build/meshward.wasm) under the
// SDK's host emulator, on goabi's direct wazero binding, in monitor mode: the
// verdict is read back from the score and reason headers the filter adds,
// exactly as an upstream would see them (scores have three decimals).
type Wasm struct {
	vm        types.VMContext
	closer    interface{ Close() error }
	model     string // base64 of the encoded model
	threshold *float64
}

// NewWasm loads the compiled filter at path, to score with the encoded model.
// A threshold of 0 keeps the model's own.
func NewWasm(path string, encodedModel []byte, threshold float64) (*Wasm, error) {
	vm, err := wasmhost.LoadDirect(path)
	if err != nil {
		return nil, err
	}
	w := &Wasm{vm: vm, closer: vm}
	w.model = (&pluginconfig.Config{}).WithModel(encodedModel).Model
	if threshold != 0 {
		w.threshold = &threshold
	}
	return w, nil
}

// Name implements Runner.
func (*Wasm) Name() string { return "wasm" }

// Close implements Runner.
func (w *Wasm) Close() error { return w.closer.Close() }

// Run implements Runner. The filter serves one workload per configuration,
// as in a sidecar, so records are scored in groups by destination (one
// emulated proxy each) and the results put back in input order.
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
	sort.Strings(dsts)
	out := make([]Result, len(recs))
	for _, d := range dsts {
		if err := w.runWorkload(d, recs, byDst[d], out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (w *Wasm) runWorkload(dst string, recs []*source.Record, idx []int, out []Result) error {
	workload := dst
	if workload == "" {
		workload = source.DefaultDestination
	}
	cfg, err := (&pluginconfig.Config{Mode: pluginconfig.ModeMonitor, Workload: workload, Model: w.model, Threshold: w.threshold, ResponseScore: true}).Encode()
	if err != nil {
		return err
	}
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(w.vm).WithPluginConfiguration(cfg))
	defer reset()
	if host.StartPlugin() != types.OnPluginStartStatusOK {
		return fmt.Errorf("the filter refused its configuration for %s: %s", workload, strings.Join(host.GetCriticalLogs(), "; "))
	}
	for _, i := range idx {
		res, err := serveRequest(host, workload, &recs[i].Request)
		if err != nil {
			return err
		}
		out[i] = res
	}
	return nil
}

// serveRequest sends one request (and its response, when known) through
// the emulated proxy and reads the filter's verdict back from the headers
// it added.
func serveRequest(host proxytest.HostEmulator, workload string, r *models.Request) (Result, error) {
	if err := host.SetProperty([]string{"connection", "uri_san_peer_certificate"}, []byte(r.Source)); err != nil {
		return Result{}, err
	}
	target := r.Path
	if r.Query != "" {
		target += "?" + r.Query
	}
	hs := make([][2]string, 0, len(r.Headers)+3)
	hs = append(hs, [2]string{":method", r.Method}, [2]string{":path", target}, [2]string{":authority", workload})
	for _, h := range r.Headers {
		hs = append(hs, [2]string{h.Name, h.Value})
	}
	id := host.InitializeHttpContext()
	host.CallOnRequestHeaders(id, hs, len(r.Body) == 0)
	if len(r.Body) > 0 {
		host.CallOnRequestBody(id, r.Body, true)
	}
	// With a known response, the final verdict is on the response.
	verdict := host.GetCurrentRequestHeaders(id)
	if r.Status != 0 {
		resp := [][2]string{{":status", strconv.Itoa(r.Status)}}
		if r.ResponseBytes > 0 {
			resp = append(resp, [2]string{"content-length", strconv.FormatInt(r.ResponseBytes, 10)})
		}
		host.CallOnResponseHeaders(id, resp, true)
		verdict = host.GetCurrentResponseHeaders(id)
	}
	res := Result{}
	for _, h := range verdict {
		switch h[0] {
		case pluginconfig.DefaultScoreHeader:
			res.Score, _ = strconv.ParseFloat(h[1], 64)
			res.Scored = true
		case "x-meshward-reason":
			res.Flagged = true
			res.Reasons = strings.Split(h[1], ",")
		}
	}
	host.CompleteHttpContext(id)
	return res, nil
}
