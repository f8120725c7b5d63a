package plugin

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

func shipConfig(t *testing.T, mode pluginconfig.Mode, maxBuffer int) []byte {
	one := 1.0
	c := pluginconfig.Config{Mode: mode, Workload: workload, CollectorCluster: "meshward-collector",
		SampleRate: &one, MaxBuffer: maxBuffer, BatchSize: 3}
	if mode != pluginconfig.ModeLearn {
		c.WithModel(fixtureModel(t))
	}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRecordsAreShipped sends streams through the filter, ticks, and answers
// the collector call: batches carry the records (no body, query values as
// shapes), no credential, and an Idempotency-Key; a 503 keeps them for a
// later retry, which sends the same batch under the same key; a new batch
// gets a new key; a full buffer drops and counts.
func TestRecordsAreShipped(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: shipConfig(t, pluginconfig.ModeMonitor, 4), props: peer(frontend)})
		for i := 0; i < 6; i++ {
			_, id := request(host, get("/reviews/12?lang=en%27"))
			host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}, {"content-length", "1234"}}, true)
			host.CompleteHttpContext(id)
		}
		if n := counter(t, host, MetricDropped); n != 2 { // buffer of 4, 6 streams; counter() ticks once
			t.Errorf("dropped = %d, want 2", n)
		}
		calls := host.GetCalloutAttributesFromContext(1) // the plugin's root context
		if len(calls) != 1 {
			t.Fatalf("%d collector calls after one tick, want 1", len(calls))
		}
		c := calls[0]
		if c.Upstream != "meshward-collector" {
			t.Errorf("upstream %q", c.Upstream)
		}
		if auth, ok := header(c.Headers, "authorization"); ok {
			t.Errorf("a credential in the batch: authorization %q", auth)
		}
		key, _ := header(c.Headers, "idempotency-key")
		if len(key) != 32 {
			t.Errorf("idempotency-key %q, want 32 hex digits", key)
		}
		if path, _ := header(c.Headers, ":path"); path != "/v1/records" {
			t.Errorf(":path %q", path)
		}
		lines := strings.Split(strings.TrimSpace(string(c.Body)), "\n")
		if len(lines) != 3 {
			t.Fatalf("batch of %d lines, want 3 (batch_size)", len(lines))
		}
		var rec struct {
			Route   string `json:"route"`
			Request struct {
				Query, Source, Destination string
				Status                     int
				ResponseBytes              int64
			} `json:"request"`
		}
		if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
			t.Fatalf("record %q: %v", lines[0], err)
		}
		if rec.Route != "/reviews/{num}" || rec.Request.Query != "lang=aa%27" || rec.Request.Source != frontend ||
			rec.Request.Destination != workload || rec.Request.Status != 200 || rec.Request.ResponseBytes != 1234 {
			t.Errorf("record %+v from %s", rec, lines[0])
		}
		// The collector pushes back: nothing is lost, the batch is retried later.
		host.CallOnHttpCallResponse(c.CalloutID, [][2]string{{":status", "503"}, {"retry-after", "2"}}, nil, nil)
		if n := counter(t, host, MetricShipped); n != 0 {
			t.Errorf("shipped = %d after a 503", n)
		}
		for i := 0; i < backoffTicks+1; i++ {
			host.Tick()
		}
		calls = host.GetCalloutAttributesFromContext(1)
		if len(calls) != 2 {
			t.Fatalf("%d calls after the pause, want the retry", len(calls))
		}
		if k, _ := header(calls[1].Headers, "idempotency-key"); k != key || string(calls[1].Body) != string(c.Body) {
			t.Errorf("the retry is not the same batch: key %q (first %q), %d bytes (first %d)", k, key, len(calls[1].Body), len(c.Body))
		}
		host.CallOnHttpCallResponse(calls[1].CalloutID, [][2]string{{":status", "200"}}, nil, []byte(`{"accepted":3}`))
		if n := counter(t, host, MetricShipped); n != 3 { // counter() ticks: the last record goes
			t.Errorf("shipped = %d, want 3", n)
		}
		calls = host.GetCalloutAttributesFromContext(1)
		if len(calls) != 3 {
			t.Fatalf("%d calls, want the next batch", len(calls))
		}
		if k, _ := header(calls[2].Headers, "idempotency-key"); k == key || len(k) != 32 {
			t.Errorf("the next batch's key %q (the first was %q)", k, key)
		}
	})
}

// Abuse: requests made to make big records (headers of 4 KiB, as many as
// the inspection limits take) cannot make the waiting records outgrow
// max_buffer_bytes: the excess is dropped and counted. A batch stays
// within maxBatchBytes, and one the collector refuses as too large (413)
// is let go rather than retried for ever.
func TestRecordBufferIsBoundedInBytes(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		const limit = 2 << 20
		one := 1.0
		c := pluginconfig.Config{Mode: pluginconfig.ModeLearn, Workload: workload, CollectorCluster: "meshward-collector",
			SampleRate: &one, MaxBuffer: 2000, BatchSize: 500, MaxBufferBytes: limit}
		cfg, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		host := e.mustStart(t, hostOpts{config: cfg, props: peer(frontend)})
		big := get("/reviews/12")
		for i := 0; i < 15; i++ {
			big = append(big, [2]string{fmt.Sprintf("x-pad-%d", i), strings.Repeat("a", 4000)})
		}
		const streams = 50
		for i := 0; i < streams; i++ {
			_, id := request(host, big)
			host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}}, true)
			host.CompleteHttpContext(id)
		}
		dropped := int(counter(t, host, MetricDropped)) // counter() ticks once: a batch goes
		calls := host.GetCalloutAttributesFromContext(1)
		if len(calls) != 1 {
			t.Fatalf("%d collector calls after one tick, want 1", len(calls))
		}
		body := calls[0].Body
		sent := strings.Count(string(body), "\n")
		if len(body) > maxBatchBytes || sent < 1 {
			t.Fatalf("a batch of %d bytes (%d records), limit %d", len(body), sent, maxBatchBytes)
		}
		each := len(body) / sent
		if each < 30_000 || dropped == 0 || (streams-dropped)*each > limit {
			t.Errorf("%d of %d records of %d bytes dropped: the buffer held %d bytes, limit %d", dropped, streams, each, (streams-dropped)*each, limit)
		}
		// Too large for the collector: let go, and the next batch follows.
		host.CallOnHttpCallResponse(calls[0].CalloutID, [][2]string{{":status", "413"}}, nil, nil)
		host.Tick()
		if calls = host.GetCalloutAttributesFromContext(1); len(calls) != 2 {
			t.Errorf("%d calls after a 413 and a tick, want the next batch", len(calls))
		}
	})
}

func TestLearnModeShipsUnscored(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: shipConfig(t, pluginconfig.ModeLearn, 10), props: peer(frontend)})
		action, id := request(host, get("/reviews/1"))
		if action != types.ActionContinue {
			t.Fatalf("learn mode: %v", action)
		}
		host.CompleteHttpContext(id)
		host.Tick()
		calls := host.GetCalloutAttributesFromContext(1)
		if len(calls) != 1 || !strings.Contains(string(calls[0].Body), `"score":0.0000,"flagged":false`) {
			t.Errorf("learn mode shipped %+v", calls)
		}
	})
}

// A caller nothing trustworthy names is never learned: learn mode ships
// nothing of it, and counts it.
func TestLearnModeSkipsUnidentifiedCallers(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: shipConfig(t, pluginconfig.ModeLearn, 10)})
		hs := append(get("/reviews/1"), [2]string{"x-envoy-peer-metadata-id", "sidecar~10.0.0.1~frontend-1.shop~shop.svc.cluster.local"})
		_, id := request(host, hs)
		host.CompleteHttpContext(id)
		if n := counter(t, host, MetricUnidentified); n != 1 {
			t.Errorf("unidentified = %d, want 1", n)
		}
		host.Tick()
		if calls := host.GetCalloutAttributesFromContext(1); len(calls) != 0 {
			t.Errorf("learn mode shipped an unidentified caller: %s", calls[0].Body)
		}
	})
}

// TestShippedRecordIsACollectorRecord decodes what the filter ships as the
// collector does, so the two cannot drift.
func TestShippedRecordIsACollectorRecord(t *testing.T) {
	r := &models.Request{Method: "POST", Path: "/reviews/77", Query: "q=a%20b&n=1", Source: frontend, Destination: workload,
		Status: 503, ResponseBytes: 42, Body: []byte("secret 1"),
		Headers: []models.Header{{Name: "user-agent", Value: "Go-http/1.1"}, {Name: "x-request-id", Value: "abc"}}}
	line := encodeRecord(r, nil, 0.98765, true, true, nil, nil, new([]byte), nil)
	var rec record.Record
	if err := json.Unmarshal(line, &rec); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	rec.Normalize()
	if rec.TS.IsZero() || rec.Route != "/reviews/{num}" || rec.Score != 0.9877 || !rec.Flagged || rec.Request.Method != "POST" ||
		rec.Request.Status != 503 || rec.Request.RequestBytes != 8 || string(rec.Request.Body) != models.ShapeValue("secret 1") || rec.Request.Query != "q=a%20a&n=0" ||
		len(rec.Request.Headers) != 1 || rec.Request.Headers[0].Value != "Aa-aaaa/0.0" {
		t.Errorf("record %+v from %s", rec, line)
	}
	if strings.Contains(string(line), "secret") || strings.Contains(string(line), "/reviews/77") || strings.Contains(string(line), "Go-http") {
		t.Errorf("the record leaks the body or an id: %s", line)
	}
	// A form sent without a content type is read as a form (sniffed), so
	// it travels as one: its names, not its values.
	r.Body = []byte("token=hunter2&n=1")
	line = encodeRecord(r, nil, 0.98765, true, true, nil, nil, new([]byte), nil)
	if err := json.Unmarshal(line, &rec); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	if string(rec.Request.Body) != "token=aaaaaa0&n=0" || strings.Contains(string(line), "hunter2") {
		t.Errorf("a form without a content type shipped as %q: %s", rec.Request.Body, line)
	}
}

// TestShippedRecordIsTheShapedRequest: what the trainer decodes from a
// record is models.ShapeRequest of the request (with a value key,
// models.ShapeRequestDigest), which offline evaluation trains on to measure
// the model a mesh runs (make eval's shaped rows).
func TestShippedRecordIsTheShapedRequest(t *testing.T) {
	key, err := models.ParseValueKey("00112233445566778899aabbccddeeff")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*models.Request{
		{Method: "GET", Path: "/reviews/77/x", Query: "q=a%27b+c&n=12&flag", Source: frontend, Destination: workload, Status: 200, ResponseBytes: 9,
			Headers: []models.Header{{Name: "user-agent", Value: "Go-http/1.1"}, {Name: "x-request-id", Value: "abc"}, {Name: "accept", Value: "*/*"}}},
		{Method: "POST", Path: "/reviews", Source: frontend, Destination: workload, Body: []byte("stars=5&text=it%27s+<b>"), RequestBytes: 70000,
			Headers: []models.Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}},
		{Method: "PUT", Path: "/r/1", Source: frontend, Destination: workload, Body: []byte(`{"a":"b c"}`),
			Headers: []models.Header{{Name: "content-type", Value: "application/json"}, {Name: "cookie", Value: "s=1; t=2"}}},
		{Method: "POST", Path: "/r", Source: frontend, Destination: workload, Body: []byte(`{"user":{"id":7,"tags":["a&b","c"]},"q":"x' or 1=1--"}`),
			Headers: []models.Header{{Name: "content-type", Value: "application/vnd.api+json; charset=utf-8"}}},
		{Method: "POST", Path: "/r", Source: frontend, Destination: workload, Body: []byte(`not json, "a":1`),
			Headers: []models.Header{{Name: "content-type", Value: "application/json"}}},
	} {
		for _, k := range []*models.ValueKey{nil, &key} {
			// The body kept as a filter keeps it as it passes.
			kept := *r
			kept.Body, kept.RequestBytes = nil, max(r.RequestBytes, int64(len(r.Body)))
			var tail models.BodyTail
			tail.Keep(&kept, r.Body, models.DefaultBodyLimit, true)
			tail.EndKeep(&kept, models.DefaultBodyLimit, true)
			var rec record.Record
			if err := json.Unmarshal(encodeRecord(&kept, &tail, 0.1, false, false, nil, k, new([]byte), nil), &rec); err != nil {
				t.Fatal(err)
			}
			want := models.ShapeRequestDigest(r, k)
			got := rec.Request
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
				t.Errorf("shipped\n%+v\nShapeRequestDigest (key %v)\n%+v", got, k != nil, want)
			}
		}
	}
}

// TestRecordIsAllocatedOnce checks that recordSize leaves room for a
// typical record (the benchmark's request, with a model's version fields and
// a form body), so encodeRecord never grows it: the line keeps the capacity
// it was made with.
func TestRecordIsAllocatedOnce(t *testing.T) {
	v := record.NewVersion(strings.Repeat("7", 64), 0.05)
	r := &models.Request{Method: "GET", Path: "/reviews/12345", Query: "lang=en", Source: frontend, Destination: workload}
	for i := 2; i < len(benchHeaders); i++ {
		r.Headers = append(r.Headers, models.Header{Name: benchHeaders[i][0], Value: benchHeaders[i][1]})
	}
	post := *r
	post.Method, post.Body = "POST", []byte("stars=5&text=loved+it")
	post.Headers = append(append([]models.Header(nil), r.Headers...), models.Header{Name: "content-type", Value: "application/x-www-form-urlencoded"})
	for _, r := range []*models.Request{r, &post} {
		var tbuf [models.MaxRouteBytes + 8]byte
		want := recordSize(r, nil, string(models.AppendTemplate(tbuf[:0], r.Path)), &v, nil)
		line := encodeRecord(r, nil, 0.5, false, false, &v, nil, new([]byte), nil)
		if cap(line) != want {
			t.Errorf("%s record of %d bytes grew from %d to %d bytes of capacity", r.Method, len(line), want, cap(line))
		}
	}
}

// A hostile request (invalid UTF-8, control bytes, quotes) still ships as
// one valid JSON line, and its shaped values keep their classes.
func TestShippedRecordOfAHostileRequestIsValidJSON(t *testing.T) {
	r := &models.Request{Method: "G\"ET", Path: "/a\xff/\x00\\", Source: "sp\x01iffe\xc3", Destination: workload,
		Headers: []models.Header{{Name: "x-h", Value: "\xff\x01ü\"\\"}}}
	line := encodeRecord(r, nil, 0.5, false, false, nil, nil, new([]byte), nil)
	if !json.Valid(line) {
		t.Fatalf("invalid JSON: %q", line)
	}
	var rec record.Record
	if err := json.Unmarshal(line, &rec); err != nil {
		t.Fatal(err)
	}
	v := rec.Request.Headers[0].Value
	want := []int{models.ClassHigh, models.ClassControl, models.ClassHigh, models.ClassQuote, models.ClassSlash}
	var got []int
	for i := 0; i < len(v); i++ {
		if i > 0 && models.ClassOf(v[i]) == models.ClassHigh && models.ClassOf(v[i-1]) == models.ClassHigh {
			continue // one high byte may travel as two (JSON strings are Unicode)
		}
		got = append(got, models.ClassOf(v[i]))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("classes %v, want %v (value %q)", got, want, v)
	}
}

// TestShippedRecordsSayWhichModelScoredThem: the canary decision compares
// flagged rates per model version, so every scored record carries its
// model's sha256, and an unflagged one the sampled share it stands for.
func TestShippedRecordsSayWhichModelScoredThem(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		half := 0.5
		c := pluginconfig.Config{Mode: pluginconfig.ModeMonitor, Workload: workload, CollectorCluster: "meshward-collector",
			SampleRate: &half, BatchSize: 100}
		c.WithModel(fixtureModel(t))
		cfg, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		host := e.mustStart(t, hostOpts{config: cfg, props: peer(frontend)})
		m, err := models.Decode(fixtureModel(t))
		if err != nil {
			t.Fatal(err)
		}
		sha := m.SHA256()
		for i := 0; i < 40; i++ {
			_, id := request(host, get("/reviews/12"))
			host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}}, true)
			host.CompleteHttpContext(id)
		}
		host.Tick()
		calls := host.GetCalloutAttributesFromContext(1)
		if len(calls) != 1 {
			t.Fatalf("%d calls", len(calls))
		}
		lines := strings.Split(strings.TrimSpace(string(calls[0].Body)), "\n")
		unflagged := 0
		for _, l := range lines {
			var rec record.Record
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatal(err)
			}
			if rec.ModelSHA256 != sha {
				t.Fatalf("record %s: model %q, want %s", l, rec.ModelSHA256, sha)
			}
			if rec.Flagged {
				if rec.SampleRate != 0 || rec.Weight() != 1 {
					t.Errorf("a flagged record (always shipped) says it was sampled: %s", l)
				}
				continue
			}
			unflagged++
			if rec.SampleRate != 0.5 || rec.Weight() != 2 {
				t.Fatalf("record %s: rate %v, want 0.5", l, rec.SampleRate)
			}
		}
		if unflagged < 5 || unflagged > 35 {
			t.Errorf("%d unflagged records of 40 shipped at a 50%% sample rate", unflagged)
		}
	})
}

// TestLearnModeShipsTheBodyShape: learn mode reads a request's body as it
// passes (never holding it) and ships its shape, so the trainer learns the
// body's parameters and size as the monitoring filter will see them.
func TestLearnModeShipsTheBodyShape(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: shipConfig(t, pluginconfig.ModeLearn, 10), props: peer(frontend)})
		id := host.InitializeHttpContext()
		host.CallOnRequestHeaders(id, [][2]string{{":method", "POST"}, {":path", "/reviews"}, {":authority", workload},
			{"content-type", "application/x-www-form-urlencoded"}}, false)
		if action := host.CallOnRequestBody(id, []byte("stars=5&text=great+book"), true); action != types.ActionContinue {
			t.Fatalf("learn mode held the body: %v", action)
		}
		host.CompleteHttpContext(id)
		host.Tick()
		calls := host.GetCalloutAttributesFromContext(1)
		if len(calls) != 1 {
			t.Fatalf("%d calls", len(calls))
		}
		var rec record.Record
		if err := json.Unmarshal(calls[0].Body[:len(calls[0].Body)-1], &rec); err != nil {
			t.Fatal(err)
		}
		if ct, _ := rec.Request.Header("content-type"); ct != "application/x-www-form-urlencoded" {
			t.Errorf("content-type %q: the trainer could not read the body as a form", ct)
		}
		if got, want := string(rec.Request.Body), models.ShapeQuery("stars=5&text=great+book"); got != want || rec.Request.RequestBytes != 23 {
			t.Errorf("body %q (%d bytes), want the shape %q (23 bytes)", got, rec.Request.RequestBytes, want)
		}
	})
}

// TestNewEdgesAreShippedWhole: with a sample rate of 0 and a threshold
// nothing reaches, requests from callers the model knows are not shipped,
// while every request from a caller it never saw (a new edge) is, standing
// for itself (no sample_rate): the detector behind the collector sees each
// step of a slow fan-out, as it does replaying all the traffic.
func TestNewEdgesAreShippedWhole(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e env) {
		zero, never := 0.0, 1.0
		c := pluginconfig.Config{Mode: pluginconfig.ModeMonitor, Workload: workload, CollectorCluster: "meshward-collector",
			SampleRate: &zero, Threshold: &never, MaxBuffer: 100, BatchSize: 100}
		c.WithModel(fixtureModel(t))
		conf, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		for _, caller := range []struct {
			principal string
			want      int
		}{{frontend, 0}, {attacker, 3}} {
			t.Run(caller.principal, func(t *testing.T) {
				host := e.mustStart(t, hostOpts{config: conf, props: peer(caller.principal)})
				for i := 0; i < 3; i++ {
					_, id := request(host, get("/reviews/12?lang=en"))
					host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}}, true)
					host.CompleteHttpContext(id)
				}
				host.Tick()
				lines := 0
				for _, call := range host.GetCalloutAttributesFromContext(1) {
					for _, l := range strings.Split(strings.TrimSpace(string(call.Body)), "\n") {
						var rec record.Record
						if err := json.Unmarshal([]byte(l), &rec); err != nil {
							t.Fatalf("record %q: %v", l, err)
						}
						if rec.Request.Source != caller.principal || rec.Flagged || rec.SampleRate != 0 || rec.Weight() != 1 {
							t.Errorf("record %+v, want %s's, unflagged, standing for itself", rec, caller.principal)
						}
						lines++
					}
				}
				if lines != caller.want {
					t.Errorf("%d records shipped, want %d", lines, caller.want)
				}
			})
		}
	})
}

// TestLongBodyRecordIsTheShapedBody: a body past the prefix a record
// carries is read as it passes, in learn mode as in monitor mode, in chunks
// of any size: its record is models.ShapeBody of the whole body, so the
// trainer learns the fields past the prefix and a long value's length
// (models.BodyTail); one past the body limit ends in a value read as cut.
func TestLongBodyRecordIsTheShapedBody(t *testing.T) {
	const formCT, jsonCT = "application/x-www-form-urlencoded", "application/json"
	form := "notes=" + strings.Repeat("lorem+ipsum+dolor%2C+", 300) + "&category=books&qty=3&agree"
	past := "a=1&notes=" + strings.Repeat("x", models.DefaultBodyLimit)
	// A JSON body is kept as the form of its fields, which passes the
	// prefix before the body does.
	jsonBody := `{"notes":"` + strings.Repeat(`lorem \"ipsum\" dolor, `, 150) + `","items":[` +
		strings.Repeat(`{"id":12,"q":"a&b"},`, 60) + `{"id":1}],"agree":true}`
	jsonPast := `{"a":1,"notes":"` + strings.Repeat("x", models.DefaultBodyLimit) + `"}`
	forEachEnv(t, func(t *testing.T, e env) {
		for _, mode := range []pluginconfig.Mode{pluginconfig.ModeLearn, pluginconfig.ModeMonitor} {
			for _, c := range []struct {
				name, ct, body string
				chunk          int
			}{{"one chunk", formCT, form, len(form)}, {"small chunks", formCT, form, 1000}, {"chunks across the prefix", formCT, form, 4000},
				{"past the limit", formCT, past, 9000}, {"json", jsonCT, jsonBody, 700}, {"json past the limit", jsonCT, jsonPast, 9000}} {
				t.Run(string(mode)+"/"+c.name, func(t *testing.T) {
					host := e.mustStart(t, hostOpts{config: shipConfig(t, mode, 10), props: peer(frontend)})
					id := host.InitializeHttpContext()
					headers := [][2]string{{":method", "POST"}, {":path", "/reviews"}, {":authority", workload}, {"content-type", c.ct}}
					host.CallOnRequestHeaders(id, headers, false)
					for off := 0; off < len(c.body); off += c.chunk {
						end := min(off+c.chunk, len(c.body))
						host.CallOnRequestBody(id, []byte(c.body[off:end]), end == len(c.body))
					}
					host.CompleteHttpContext(id)
					rec := shippedRecord(t, host)
					r := models.Request{Method: "POST", Path: "/reviews", Body: []byte(c.body),
						Headers: []models.Header{{Name: "content-type", Value: c.ct}}}
					shaped := models.ShapeRequest(&r)
					if got, want := string(rec.Request.Body), string(shaped.Body); got != want {
						t.Errorf("record's body\n%.200q…%.200q\nwant\n%.200q…%.200q", got, got[max(0, len(got)-200):], want, want[max(0, len(want)-200):])
					}
					if rec.Request.FormBytes != shaped.FormBytes || c.ct == jsonCT && shaped.FormBytes <= models.MaxBodyPrefix {
						t.Errorf("FormBytes %d, want %d", rec.Request.FormBytes, shaped.FormBytes)
					}
					if rec.Request.RequestBytes != int64(len(c.body)) {
						t.Errorf("RequestBytes %d, want %d", rec.Request.RequestBytes, len(c.body))
					}
				})
			}
		}
	})
}

// With max_header_bytes raised, a query past what a record carries
// (models.MaxRecordedQuery) is shipped with its whole pairs within it and
// counted, natively and as .wasm: the record stays within the collector's
// bounds, so the request's edge, route and status still reach the
// control plane (a refused record would take them with it).
func TestLongQueryRecordIsCut(t *testing.T) {
	one := 1.0
	c := pluginconfig.Config{Mode: pluginconfig.ModeLearn, Workload: workload, CollectorCluster: "meshward-collector", SampleRate: &one,
		MaxHeaderBytes: 1 << 20}
	conf, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	first := "a=" + strings.Repeat("!", 40<<10)
	target := "/orders?" + first + "&b=" + strings.Repeat("'", 100<<10)
	forEachEnv(t, func(t *testing.T, e env) {
		host := e.mustStart(t, hostOpts{config: conf, props: peer(frontend)})
		id := host.InitializeHttpContext()
		host.CallOnRequestHeaders(id, [][2]string{{":method", "GET"}, {":path", target}, {":authority", workload}}, true)
		host.CompleteHttpContext(id)
		rec := shippedRecord(t, host)
		want := string(models.AppendShapeQuery(nil, first))
		if rec.Request.Query != want || len(rec.Request.Query) > models.MaxShippedQuery {
			t.Errorf("record query of %d bytes (bound %d), want the first pair's shape, %d bytes", len(rec.Request.Query), models.MaxShippedQuery, len(want))
		}
		if n := counter(t, host, MetricQueryCut); n != 1 {
			t.Errorf("%s = %d, want 1", MetricQueryCut, n)
		}
	})
}
