package plugin

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

const (
	testValueKey  = "00112233445566778899aabbccddeeff"
	otherValueKey = "ffeeddccbbaa99887766554433221100"
)

// digestModel trains, as the control plane does, on the records of filters
// with testValueKey: the form's colour takes four values.
func digestModel(t *testing.T) []byte {
	t.Helper()
	k, err := models.ParseValueKey(testValueKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := models.ShapedTrainConfig()
	cfg.Now, cfg.ValueKeyID = time.Unix(1_700_000_000, 0), k.ID()
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		hs := append(fixtureHeaders(i), models.Header{Name: "content-type", Value: "application/x-www-form-urlencoded"})
		r := models.Request{Method: "POST", Path: "/orders", Headers: hs, Source: frontend, Destination: workload,
			Body: []byte("colour=" + []string{"red", "blue", "green", "lights"}[i%4] + "&qty=" + strconv.Itoa(1+i%5))}
		s := models.ShapeRequestDigest(&r, &k)
		tr.Observe(&s)
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	b, err := models.EncodeSection(m, workload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func valueKeyConfig(t *testing.T, mode pluginconfig.Mode, key string, model []byte) []byte {
	t.Helper()
	one := 1.0
	c := pluginconfig.Config{Mode: mode, Workload: workload, CollectorCluster: "meshward-collector", SampleRate: &one, ValueKey: key}
	if model != nil {
		c.WithModel(model)
	}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// With a value key, the compiled filter ships each short query and form
// value's digest beside its shape, and the values with keywords marked (the
// record is models.ShapeRequestDigest of the request), and judges a closed field by its values: a colour never
// sent is a new value even with a known colour's shape; with another key
// (a rotation under way) the filter says so and judges by shape, without
// flagging the known colours.
func TestValueKeyDigestsShortValues(t *testing.T) {
	k, err := models.ParseValueKey(testValueKey)
	if err != nil {
		t.Fatal(err)
	}
	model := digestModel(t)
	headers := [][2]string{{":method", "POST"}, {":path", "/orders"}, {":authority", workload},
		{"user-agent", "Go-http-client/1.1"}, {"accept", "application/json"}, {"x-request-id", "5"},
		{"content-type", "application/x-www-form-urlencoded"}}
	send := func(host interface {
		InitializeHttpContext() uint32
		CallOnRequestHeaders(uint32, [][2]string, bool) types.Action
		CallOnRequestBody(uint32, []byte, bool) types.Action
		CompleteHttpContext(uint32)
		GetCurrentRequestHeaders(uint32) [][2]string
	}, path, body string) (score, reasons string) {
		id := host.InitializeHttpContext()
		hs := append([][2]string(nil), headers...)
		hs[1] = [2]string{":path", path}
		host.CallOnRequestHeaders(id, hs, false)
		host.CallOnRequestBody(id, []byte(body), true)
		got := host.GetCurrentRequestHeaders(id)
		host.CompleteHttpContext(id)
		score, _ = header(got, pluginconfig.DefaultScoreHeader)
		reasons, _ = header(got, headerReason)
		return score, reasons
	}
	forEachEnv(t, func(t *testing.T, e env) {
		t.Run("learn ships digests", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: valueKeyConfig(t, pluginconfig.ModeLearn, testValueKey, nil), props: peer(frontend)})
			body := "colour=red&qty=2&note=" + strings.Repeat("x", 40) + "&q=1%27+union+select+1--"
			send(host, "/orders?ref=ab12&s=%3Cscript%3E", body)
			rec := shippedRecord(t, host)
			r := models.Request{Method: "POST", Path: "/orders", Query: "ref=ab12&s=%3Cscript%3E", Body: []byte(body),
				Headers: []models.Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}}
			want := models.ShapeRequestDigest(&r, &k)
			if rec.Request.Query != want.Query || string(rec.Request.Body) != string(want.Body) || !rec.Request.KeywordMarks {
				t.Errorf("record query %q body %q (keyword marks %v), want %q %q", rec.Request.Query, rec.Request.Body, rec.Request.KeywordMarks, want.Query, want.Body)
			}
			if !strings.Contains(rec.Request.Query, "s=~1~") || !strings.Contains(string(rec.Request.Body), "q=~3~") {
				t.Errorf("record query %q body %q: want the values with keywords marked", rec.Request.Query, rec.Request.Body)
			}
			if !strings.Contains(string(rec.Request.Body), "~") || strings.Contains(string(rec.Request.Body), "red") {
				t.Errorf("record body %q: want digests, not values", rec.Request.Body)
			}
			if n := counter(t, host, MetricDigestsCapped); n != 0 {
				t.Errorf("%s = %d after a request of three values", MetricDigestsCapped, n)
			}
		})
		t.Run("marks are bounded and counted", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: valueKeyConfig(t, pluginconfig.ModeLearn, testValueKey, nil), props: peer(frontend)})
			send(host, "/orders", strings.Repeat("a=1&", 100)+"colour=red")
			rec := shippedRecord(t, host)
			if n := models.DigestMarks(rec.Request.Body); n != models.MaxDigestMarks {
				t.Errorf("a body of 101 short values carries %d marks, want %d", n, models.MaxDigestMarks)
			}
			if n := counter(t, host, MetricDigestsCapped); n != 1 {
				t.Errorf("%s = %d, want 1", MetricDigestsCapped, n)
			}
		})
		t.Run("monitor looks values up", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: valueKeyConfig(t, pluginconfig.ModeMonitor, testValueKey, model), props: peer(frontend)})
			known, knownWhy := send(host, "/orders", "colour=lights&qty=3")
			tampered, why := send(host, "/orders", "colour=lightx&qty=3")
			if strings.Contains(knownWhy, "new_value") || !strings.Contains(why, "new_value") || tampered <= known {
				t.Errorf("lights: %s (%s); lightx, a colour never sent of the same shape: %s (%s)", known, knownWhy, tampered, why)
			}
		})
		t.Run("another key", func(t *testing.T) {
			host := e.mustStart(t, hostOpts{config: valueKeyConfig(t, pluginconfig.ModeMonitor, otherValueKey, model), props: peer(frontend)})
			if !strings.Contains(strings.Join(host.GetWarnLogs(), "\n"), "another value_key") {
				t.Errorf("no warning of the key mismatch: %q", host.GetWarnLogs())
			}
			if _, why := send(host, "/orders", "colour=lights&qty=3"); strings.Contains(why, "new_value") {
				t.Errorf("a known colour under another key: %s", why)
			}
		})
	})
}
