package runner

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/filter/wasmhost"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

// Sidecars run the compiled filter (build/meshward.wasm) as the sidecars of
// a mesh do, under the SDK's host emulator: each workload's configuration
// comes from outside (the control plane's xDS, or a learn-mode document),
// and the filter's calls to its collector cluster are forwarded over HTTP
// to a real collector, whose answers go back to the filter — the part of
// Envoy the emulator does not have. The emulator holds one proxy at a time,
// so workloads run one after the other.
type Sidecars struct {
	vm     types.VMContext
	closer interface{ Close() error }
	// Collector is the collector's base URL (http://host:port).
	Collector string
	client    *http.Client
	// Batches counts the batches forwarded, by the collector's status.
	Batches map[int]int
	// Dropped counts the records the filters dropped (buffer full).
	Dropped uint64
	// ClientTLS, when set, gives the TLS configuration (a client
	// certificate: the workload's identity) a workload's sidecar calls the
	// collector with, as Envoy's collector cluster does with SDS.
	ClientTLS func(workload string) (*tls.Config, error)
}

// NewSidecars loads the compiled filter at path, on a host that answers as
// the profile says.
func NewSidecars(path, collectorURL string, profile wazerohost.Profile) (*Sidecars, error) {
	vm, err := wasmhost.LoadDirect(path, profile)
	if err != nil {
		return nil, err
	}
	return &Sidecars{vm: vm, closer: vm, Collector: strings.TrimSuffix(collectorURL, "/"),
		client: &http.Client{Timeout: 10 * time.Second}, Batches: map[int]int{}}, nil
}

// Close unloads the filter.
func (s *Sidecars) Close() error { return s.closer.Close() }

// tickEvery is how many requests pass between two ticks; with the default
// batch size (500) and buffer (2000) no record is dropped for want of a tick.
const tickEvery = 250

// rootContextID is the emulator's plugin (root) context, where the filter's
// HTTP calls are made.
const rootContextID = 1

// Run sends one workload's requests through the filter configured with
// pluginConfig, ticking as the proxy's timer would and forwarding the
// batches it ships; at the end it ticks until the filter's buffer is empty
// (or the collector keeps refusing). Results are in the order of recs.
func (s *Sidecars) Run(workload string, pluginConfig []byte, recs []*source.Record) ([]Result, error) {
	// The emulator logs every call and the filter's every log line to the
	// standard logger; a run's summary is what matters, and refusals are
	// read back from the emulator below.
	prev := log.Writer()
	log.SetOutput(io.Discard)
	defer log.SetOutput(prev)
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(s.vm).WithPluginConfiguration(pluginConfig))
	defer reset()
	if host.StartPlugin() != types.OnPluginStartStatusOK {
		return nil, fmt.Errorf("the filter refused its configuration for %s: %s", workload, strings.Join(host.GetCriticalLogs(), "; "))
	}
	f := &forwarder{s: s, host: host, client: s.client}
	if s.ClientTLS != nil {
		tc, err := s.ClientTLS(workload)
		if err != nil {
			return nil, err
		}
		f.client = &http.Client{Timeout: s.client.Timeout, Transport: &http.Transport{TLSClientConfig: tc}}
		defer f.client.CloseIdleConnections()
	}
	var mode struct {
		Mode pluginconfig.Mode `json:"mode"`
	}
	_ = json.Unmarshal(pluginConfig, &mode) // the filter accepted it: it decodes
	enforcing := mode.Mode == pluginconfig.ModeEnforce
	out := make([]Result, len(recs))
	for i, r := range recs {
		res, err := serveRequest(host, workload, &r.Request)
		res.Enforcing = enforcing
		if err != nil {
			return nil, err
		}
		out[i] = res
		if (i+1)%tickEvery == 0 {
			if _, err := f.tick(); err != nil {
				return nil, err
			}
		}
	}
	// The filter pauses shipping for a few ticks after a push-back; stop
	// once it has been quiet for longer than that.
	for quiet := 0; quiet < 12; {
		sent, err := f.tick()
		if err != nil {
			return nil, err
		}
		if sent {
			quiet = 0
		} else {
			quiet++
		}
	}
	if n, err := host.GetCounterMetric("meshward_records_dropped_total"); err == nil {
		s.Dropped += n
	}
	return out, nil
}

// forwarder delivers the filter's HTTP calls.
type forwarder struct {
	s      *Sidecars
	host   proxytest.HostEmulator
	client *http.Client
	done   int // callouts answered
}

// tick fires the filter's timer and answers the calls it made.
func (f *forwarder) tick() (bool, error) {
	f.host.Tick()
	calls := f.host.GetCalloutAttributesFromContext(rootContextID)
	sent := false
	for ; f.done < len(calls); f.done++ {
		if err := f.forward(&calls[f.done]); err != nil {
			return sent, err
		}
		sent = true
	}
	return sent, nil
}

func (f *forwarder) forward(c *proxytest.HttpCalloutAttribute) error {
	method, path := "POST", "/"
	hdr := http.Header{}
	for _, h := range c.Headers {
		switch h[0] {
		case ":method":
			method = h[1]
		case ":path":
			path = h[1]
		case ":authority", ":scheme":
		default:
			hdr.Add(h[0], h[1])
		}
	}
	req, err := http.NewRequest(method, f.s.Collector+path, bytes.NewReader(c.Body))
	if err != nil {
		return err
	}
	req.Header = hdr
	resp, err := f.client.Do(req)
	if err != nil {
		// As Envoy does when the cluster cannot be reached: a 503 to the
		// filter, which keeps the batch for a retry.
		f.s.Batches[http.StatusServiceUnavailable]++
		f.host.CallOnHttpCallResponse(c.CalloutID, [][2]string{{":status", "503"}}, nil, nil)
		return nil
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	f.s.Batches[resp.StatusCode]++
	hs := [][2]string{{":status", fmt.Sprint(resp.StatusCode)}}
	for k, vs := range resp.Header {
		for _, v := range vs {
			hs = append(hs, [2]string{strings.ToLower(k), v})
		}
	}
	f.host.CallOnHttpCallResponse(c.CalloutID, hs, nil, body)
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
	// Denied (enforce mode): the 403 is the answer, with no response phase.
	if resp := host.GetSentLocalResponse(id); resp != nil {
		host.CompleteHttpContext(id)
		return deniedOf(resp.StatusCode, resp.Headers), nil
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
	host.CompleteHttpContext(id)
	return verdictOf(verdict), nil
}
