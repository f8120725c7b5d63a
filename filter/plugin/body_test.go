package plugin

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

// formModels are models of a search form (POST /search, q and n), one
// trained on short forms and one on forms of hundreds of pairs; built once.
var formModels = struct {
	once          sync.Once
	short, padded []byte
	err           error
}{}

func formModel(t testing.TB, padded bool) []byte {
	t.Helper()
	formModels.once.Do(func() {
		if formModels.short, formModels.err = trainForms(false); formModels.err == nil {
			formModels.padded, formModels.err = trainForms(true)
		}
	})
	if formModels.err != nil {
		t.Fatal(formModels.err)
	}
	if padded {
		return formModels.padded
	}
	return formModels.short
}

func trainForms(padded bool) ([]byte, error) {
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(1_700_000_000, 0)
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		return nil, err
	}
	g := rand.New(rand.NewPCG(11, 12))
	words := []string{"shoes", "boots", "red", "lamp", "garden", "coffee", "table", "desk"}
	hs := append(fixtureHeaders(0), models.Header{Name: "content-type", Value: "application/x-www-form-urlencoded"})
	for i := 0; i < 3000; i++ {
		body := "q=" + words[g.IntN(len(words))] + "&n=" + strconv.Itoa(g.IntN(100))
		if padded {
			body = strings.Repeat("q="+words[g.IntN(len(words))]+"&", 300+g.IntN(500)) + body
		}
		tr.Observe(&models.Request{Method: "POST", Path: "/search", Headers: hs, Body: []byte(body), Source: frontend, Destination: workload})
		tr.Observe(&models.Request{Method: "GET", Path: "/reviews/" + strconv.Itoa(g.IntN(100000)), Headers: fixtureHeaders(i), Source: frontend, Destination: workload})
	}
	m, err := tr.Model()
	if err != nil {
		return nil, err
	}
	return models.EncodeSection(m, workload)
}

// searchPost is a form post to the search route.
var searchPost = [][2]string{{":method", "POST"}, {":path", "/search"}, {"user-agent", "Go-http-client/1.1"}, {"accept", "application/json"},
	{"content-type", "application/x-www-form-urlencoded"}}

// post sends a body in chunks of at most size bytes and returns the score
// the request went upstream with (or was denied with), and the stream id.
func post(t *testing.T, host proxytest.HostEmulator, headers [][2]string, body string, size int) (float64, uint32) {
	t.Helper()
	id := host.InitializeHttpContext()
	host.CallOnRequestHeaders(id, headers, false)
	for len(body) > 0 {
		n := min(len(body), size)
		host.CallOnRequestBody(id, []byte(body[:n]), n == len(body))
		body = body[n:]
	}
	hs := host.GetCurrentRequestHeaders(id)
	if r := host.GetSentLocalResponse(id); r != nil {
		hs = r.Headers
	}
	got, _ := header(hs, pluginconfig.DefaultScoreHeader)
	score, err := strconv.ParseFloat(got, 64)
	if err != nil {
		t.Fatalf("score header %q: %v", got, err)
	}
	return score, id
}

// The padded attack: the payload after 700 benign pairs, past what
// a filter reading a 4 KiB prefix sees.
var (
	payload = "q=" + url.QueryEscape("1' OR '1'='1' UNION SELECT username,password FROM users--")
	padding = strings.Repeat("q=shoes&", 700)
)

// TestPaddedPayloadScoresAsItsPayload: padding does not hide a payload:
// with 700 benign pairs before it, in chunks of any size, it scores within
// 0.05 of the payload alone; and a padded benign body stays below the
// threshold where the route's forms were that long.
func TestPaddedPayloadScoresAsItsPayload(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		// One emulated proxy per subtest: the SDK's emulator is global.
		t.Run("short forms", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeMonitor, formModel(t, false)), props: peer(frontend)})
			alone, _ := post(t, host, searchPost, payload, 1<<20)
			if alone <= 0.5 {
				t.Fatalf("the payload alone scores %.3f", alone)
			}
			for _, size := range []int{1 << 20, 4096, 1000, 61} {
				padded, id := post(t, host, searchPost, padding+payload, size)
				if math.Abs(padded-alone) > 0.05 {
					t.Errorf("padded, in chunks of %d bytes: %.3f, alone %.3f", size, padded, alone)
				}
				if r, _ := header(host.GetCurrentRequestHeaders(id), headerReason); r == "" {
					t.Errorf("padded, in chunks of %d bytes: flagged without a reason", size)
				}
			}
		})
		t.Run("long forms", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeMonitor, formModel(t, true)), props: peer(frontend)})
			if benign, _ := post(t, host, searchPost, padding+"q=lamp&n=3", 4096); benign > 0.5 {
				t.Errorf("a padded benign form where forms are that long scores %.3f", benign)
			}
			if padded, _ := post(t, host, searchPost, padding+payload, 4096); padded <= 0.5 {
				t.Errorf("the padded payload where forms are that long scores %.3f", padded)
			}
		})
	})
}

// TestBodyOverTheLimit: enforce mode denies a body beyond max_body_bytes
// (413) unless over_limit is inspect, which judges what fits and lets the
// rest through; monitor mode lets it through; the bytes not read count in
// meshward_uninspected_bytes_total. A client that declares more than the
// limit is answered before it sends it.
func TestBodyOverTheLimit(t *testing.T) {
	// A form as long as the route's are (formModel's long forms).
	body := strings.Repeat("q=lamp&", 700) + "q=red&n=1" // 4,909 bytes
	start := func(t *testing.T, e env, mode pluginconfig.Mode, action pluginconfig.LimitAction) proxytest.HostEmulator {
		c := pluginconfig.Config{Mode: mode, Workload: workload, MaxBodyBytes: 4096, OverLimit: action}
		doc, err := c.WithModel(formModel(t, true)).Encode()
		if err != nil {
			t.Fatal(err)
		}
		return e.mustStart(t, hostOpts{config: doc, props: peer(frontend)})
	}
	forEachEnv(t, func(t *testing.T, e env) {
		t.Run("enforce/deny", func(t *testing.T) { bodyDenied(t, start(t, e, pluginconfig.ModeEnforce, pluginconfig.LimitDeny), body) })
		for _, c := range []struct {
			mode   pluginconfig.Mode
			action pluginconfig.LimitAction
		}{{pluginconfig.ModeEnforce, pluginconfig.LimitInspect}, {pluginconfig.ModeMonitor, pluginconfig.LimitDeny}} {
			t.Run(string(c.mode)+"/"+string(c.action), func(t *testing.T) {
				host := start(t, e, c.mode, c.action)
				id := host.InitializeHttpContext()
				host.CallOnRequestHeaders(id, searchPost, false)
				a1 := host.CallOnRequestBody(id, []byte(body[:4500]), false)
				a2 := host.CallOnRequestBody(id, []byte(body[4500:]), true)
				if a1 != types.ActionContinue || a2 != types.ActionContinue || host.GetSentLocalResponse(id) != nil {
					t.Errorf("%v then %v, local response %v; want the request judged at the limit and through", a1, a2, host.GetSentLocalResponse(id))
				}
				if s, _ := header(host.GetCurrentRequestHeaders(id), pluginconfig.DefaultScoreHeader); s == "" {
					t.Error("not judged")
				}
				if n := counter(t, host, MetricUninspected); n != uint64(len(body)-4096) {
					t.Errorf("%s = %d, want %d", MetricUninspected, n, len(body)-4096)
				}
			})
		}
	})
}

func bodyDenied(t *testing.T, host proxytest.HostEmulator, body string) {
	{
		id := host.InitializeHttpContext()
		host.CallOnRequestHeaders(id, searchPost, false)
		host.CallOnRequestBody(id, []byte(body[:3000]), false)
		// The rest arrives whole: more than is inspected.
		if a := host.CallOnRequestBody(id, []byte(body[3000:]), true); a != types.ActionPause {
			t.Errorf("deny: a body past the limit got %v", a)
		}
		if r := host.GetSentLocalResponse(id); r == nil || r.StatusCode != 413 {
			t.Errorf("deny: local response %+v, want 413", r)
		} else if reason, _ := header(r.Headers, headerReason); reason != "body_over_limit" {
			t.Errorf("deny: reason %q", reason)
		}
		// Declared too long: answered at the headers.
		id = host.InitializeHttpContext()
		if a := host.CallOnRequestHeaders(id, append(searchPost, [2]string{"content-length", "9000"}), false); a != types.ActionPause || host.GetSentLocalResponse(id) == nil {
			t.Errorf("deny: a declared 9,000-byte body got %v, local response %v", a, host.GetSentLocalResponse(id))
		}
		if n := counter(t, host, MetricDenied); n != 2 {
			t.Errorf("denied = %d, want 2", n)
		}
	}
}

// TestHeadersOverTheLimit: headers beyond max_headers or max_header_bytes
// are not read; enforce mode denies such a request (431) unless over_limit
// is inspect; the bytes not read count.
func TestHeadersOverTheLimit(t *testing.T) {
	many := append([][2]string(nil), get("/reviews/4242")...)
	extra := 0
	for i := 0; i < 10; i++ {
		h := [2]string{fmt.Sprintf("x-extra-%d", i), "v"}
		many = append(many, h)
		if i >= 5 { // the request has 3 headers before these; the limit is 8
			extra += len(h[0]) + len(h[1])
		}
	}
	forEachEnv(t, func(t *testing.T, e env) {
		for _, action := range []pluginconfig.LimitAction{pluginconfig.LimitDeny, pluginconfig.LimitInspect} {
			t.Run(string(action), func(t *testing.T) {
				c := pluginconfig.Config{Mode: pluginconfig.ModeEnforce, Workload: workload, MaxHeaders: 8, OverLimit: action}
				doc, _ := c.WithModel(fixtureModel(t)).Encode()
				host := e.mustStart(t, hostOpts{config: doc, props: peer(frontend)})
				_, id := request(host, many)
				r := host.GetSentLocalResponse(id)
				switch {
				case action == pluginconfig.LimitDeny && (r == nil || r.StatusCode != 431):
					t.Errorf("deny: local response %+v, want 431", r)
				case action == pluginconfig.LimitInspect && r != nil && r.StatusCode == 431:
					t.Errorf("inspect: denied for its headers")
				}
				if n := counter(t, host, MetricUninspected); n != uint64(extra) {
					t.Errorf("%s = %d, want %d", MetricUninspected, n, extra)
				}
			})
		}
	})
}
