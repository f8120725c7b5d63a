package models

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestTemplate(t *testing.T) {
	cases := map[string]string{
		"/":                "/",
		"":                 "/",
		"/users/42/orders": "/users/{num}/orders",
		"/users/7/orders/": "/users/{num}/orders/",
		"/u/123e4567-e89b-12d3-a456-426614174000": "/u/{uuid}",
		"/blob/deadbeefcafe0123":                  "/blob/{hex}",
		"/s/aGVsbG8gd29ybGQgMTIzNDU2Nzg5MA":       "/s/{tok}",
		"/orders/2024-17":                         "/orders/{tok}",
		"/api/v1/reviews":                         "/api/v1/reviews",
		"/static/app.js":                          "/static/app.js",
		"no-slash":                                "/no-slash",
		"/a//b":                                   "/a//b",
		"/search/ünïcode":                         "/search/ünïcode",
		"/facade":                                 "/facade", // hex letters only, no digit: a word
	}
	for in, want := range cases {
		if got := Template(in); got != want {
			t.Errorf("Template(%q) = %q, want %q", in, got, want)
		}
	}
	long := "/" + strings.Repeat("segment/", 100)
	if got := Template(long); len(got) > MaxRouteBytes+len("/…") || !strings.HasSuffix(got, "/…") {
		t.Errorf("long path templated to %d bytes %q", len(got), got[len(got)-10:])
	}
}

// TestSegmentShapeTable checks the table-driven segmentShape against the
// range tests it replaced (segmentShapeLong): every byte alone and amid
// digits, hex and mixed-case tokens, and segments near each shape's bounds.
func TestSegmentShapeTable(t *testing.T) {
	segs := []string{"reviews", "12345", "0b0c5a8e-9a4f-4a2e-8f58-0d7cfa0c1a6b", "0b0c5a8e-9a4f-4a2e-8f58-0d7cfa0c1a6g",
		"0b0c5a8e99a4f-4a2e-8f58-0d7cfa0c1a6b", "80f198ee56343ba864fe8b2a57d3eff7", "deadbeef", "deadbee1", "abcdefgh",
		"AbCdEf0123456789xy", "aaaaaaaaaaaaaaa1", "Aa1aaaaaaaaaaaaa", "AAAAAAAAAAAAAAA1", "order-2024-17", "v1x9", "a123",
		"ab12", "1_2_3_x", "12_3_x", "1-2-3-4", "~~1", "__12", "a.b", "x%41", "héllo", "a b", "ABCDEF12",
		"GGGGGGGGaaaaaaa1", "ggggggggAAAAAAA1", "0b0c5a8e_9a4f-4a2e-8f58-0d7cfa0c1a6b", "12__3", "1-2-3"}
	for c := 0; c < 256; c++ {
		b := string([]byte{byte(c)})
		segs = append(segs, b, "12"+b+"34", "abcdef12"+b+"3456789A", "Ab"+b+"cdefgh1234567890")
	}
	for _, s := range segs {
		if got, want := segmentShape(s), segmentShapeLong(s); got != want {
			t.Errorf("segmentShape(%q) = %q, want %q", s, got, want)
		}
	}
}

// TestSkipHeader checks skipHeader's word comparisons against plain string
// comparisons: every skipped name is skipped, and no name one byte away from
// one (at any position, any value), nor a cut or extended one, is.
func TestSkipHeader(t *testing.T) {
	skipped := []string{"host", "content-length", "x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
		"x-b3-sampled", "traceparent", "tracestate", "x-envoy-attempt-count", "x-forwarded-for",
		"x-forwarded-proto", "x-envoy-peer-metadata", "x-envoy-peer-metadata-id", "x-envoy-expected-rq-timeout-ms"}
	want := map[string]bool{}
	for _, n := range skipped {
		want[n] = true
	}
	check := func(name string) {
		if got := skipHeader(name); got != want[name] {
			t.Errorf("skipHeader(%q) = %v, want %v", name, got, want[name])
		}
		if want[name] && !maySkipHeader(len(name)) {
			t.Errorf("maySkipHeader(%d) = false, but skipHeader leaves out %q", len(name), name)
		}
	}
	for _, n := range append(skipped, "", "x", "hosts", "user-agent", "accept", "content-type", "x-forwarded-host", "authorization") {
		check(n)
		check(n + "x")
		if n != "" {
			check(n[:len(n)-1])
		}
		for i := 0; i < len(n); i++ {
			for c := 0; c < 256; c++ {
				b := []byte(n)
				b[i] = byte(c)
				check(string(b))
			}
		}
	}
}

func TestTemplateDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, MaxRouteBytes+8)
	if n := testing.AllocsPerRun(100, func() { buf = AppendTemplate(buf[:0], "/users/42/orders/deadbeef99") }); n != 0 {
		t.Errorf("AppendTemplate allocates %v times", n)
	}
}

func trainFixture(t testing.TB, seed uint64, order []int) *Model {
	t.Helper()
	cfg := DefaultTrainConfig()
	cfg.Seed = seed
	cfg.Now = time.Unix(1_700_000_000, 0)
	tr, err := NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reqs := fixtureRequests()
	if order == nil {
		for i := range reqs {
			order = append(order, i)
		}
	}
	for _, i := range order {
		tr.Observe(&reqs[i])
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func fixtureRequests() []Request {
	var out []Request
	for svc := 0; svc < 5; svc++ {
		dst := fmt.Sprintf("svc-%d.shop", svc)
		for caller := 0; caller < 3; caller++ {
			src := fmt.Sprintf("spiffe://cluster.local/ns/shop/sa/caller-%d", (svc+caller)%7)
			for i := 0; i < 20; i++ {
				out = append(out,
					Request{Method: "GET", Path: fmt.Sprintf("/items/%d", i), Source: src, Destination: dst},
					Request{Method: "POST", Path: "/items", Source: src, Destination: dst})
			}
		}
	}
	return out
}

func TestCodecRoundTrip(t *testing.T) {
	m := trainFixture(t, 1, nil)
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if d.SHA256() != m.SHA256() || d.Size() != len(b) {
		t.Errorf("sha/size changed: %s/%d vs %s/%d", d.SHA256(), d.Size(), m.SHA256(), len(b))
	}
	if !d.Meta.TrainedAt.Equal(m.Meta.TrainedAt) || d.Meta.Samples != m.Meta.Samples || d.Meta.Threshold != m.Meta.Threshold {
		t.Errorf("meta changed: %+v vs %+v", d.Meta, m.Meta)
	}
	b2, err := Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Error("re-encoding a decoded model changed its bytes")
	}
	for _, r := range fixtureRequests() {
		if a, b := m.Score(&r), d.Score(&r); a != b {
			t.Fatalf("decoded model scores %+v differently: %+v vs %+v", r, a, b)
		}
	}
}

func TestTrainingIsDeterministic(t *testing.T) {
	n := len(fixtureRequests())
	reversed := make([]int, n)
	for i := range reversed {
		reversed[i] = n - 1 - i
	}
	a, _ := Encode(trainFixture(t, 7, nil))
	b, _ := Encode(trainFixture(t, 7, nil))
	c, _ := Encode(trainFixture(t, 7, reversed))
	if !bytes.Equal(a, b) {
		t.Error("same seed and input gave different bytes")
	}
	// The caller graph does not depend on order; later components that
	// sample will, and this line will then compare a and b only.
	if !bytes.Equal(a, c) {
		t.Error("the same requests in another order gave different bytes")
	}
	d, _ := Encode(trainFixture(t, 8, nil))
	if bytes.Equal(a, d) {
		t.Error("the seed is not recorded in the model")
	}
}

func TestDecodeRejects(t *testing.T) {
	b, err := Encode(trainFixture(t, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	// Every truncation is rejected.
	for n := 0; n < len(b); n++ {
		if _, err := Decode(b[:n]); !errors.Is(err, ErrModelFormat) {
			t.Fatalf("truncated to %d bytes: err %v", n, err)
		}
	}
	// Every single-byte corruption is rejected (magic, version, length, checksum, payload).
	for i := 0; i < len(b); i++ {
		c := append([]byte(nil), b...)
		c[i] ^= 0x5a
		if _, err := Decode(c); err == nil {
			t.Fatalf("corruption at byte %d accepted", i)
		}
	}
	if _, err := Decode(append(append([]byte(nil), b...), 0)); err == nil || !strings.Contains(err.Error(), "truncated or padded") {
		t.Errorf("padding: %v", err)
	}
	big := append(append([]byte(nil), b[:headerSize]...), make([]byte, MaxMeshBytes)...)
	if _, err := Decode(big); !errors.Is(err, ErrModelTooLarge) {
		t.Errorf("oversize: %v", err)
	}
	msgs := map[string][]byte{"bad magic": append([]byte("XXXX"), b[4:]...)}
	for want, in := range msgs {
		if _, err := Decode(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
	}
}

func TestDecodeRejectsBadIndexWithValidChecksum(t *testing.T) {
	// A payload that is well-formed bytes but names an edge outside its
	// tables must be refused even though its checksum matches.
	m := &Model{Workloads: map[string]*Workload{"a": {Name: "a", Sources: []string{"s"}, Routes: []Route{{Method: "GET", Template: "/", Count: 1}}, Edges: []Edge{{Source: 3, Route: 0, Count: 1}}}}}
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(b); err == nil || !strings.Contains(err.Error(), "edge") {
		t.Errorf("bad edge index: %v", err)
	}
}

// busyFixture is fixtureRequests' mesh with each caller's requests
// repeated n times: enough traffic that a caller, route or edge never seen
// is rare by Good-Turing's count (about 1 in 5,000 requests of a
// workload at n = 50), as a mesh's edges are; the fixture's 120 requests
// per workload could not say a new caller is rarer than 1 in 120.
func busyFixture(t testing.TB, n int) *Model {
	t.Helper()
	tr := newTestTrainer(t)
	reqs := fixtureRequests()
	for k := 0; k < n; k++ {
		for i := range reqs {
			tr.Observe(&reqs[i])
		}
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestScore(t *testing.T) {
	m := busyFixture(t, 50)
	// An id the route never had, of a length it had (a longer one is
	// lexically new to this tiny training set, and the content model says so).
	known := Request{Method: "GET", Path: "/items/17", Source: "spiffe://cluster.local/ns/shop/sa/caller-0", Destination: "svc-0.shop"}
	// Typical: below the threshold, nothing to name (the content model ranks
	// even training's own requests, and this fixture is so uniform that
	// calibration has almost no spread, so the score need not be 0).
	if v := m.Score(&known); !v.Scored || v.Score >= m.Meta.Threshold || v.NReason != 0 {
		t.Errorf("known edge: %+v", v)
	}
	newCaller := known
	newCaller.Source = "spiffe://cluster.local/ns/shop/sa/intruder"
	if v := m.Score(&newCaller); v.Score <= m.Meta.Threshold || v.Reasons[0].Code != ReasonNewCaller {
		t.Errorf("new caller: %+v", v)
	}
	both := newCaller
	both.Path = "/admin/users"
	v := m.Score(&both)
	if !hasReason(v, ReasonNewCaller) || !hasReason(v, ReasonNewRoute) || v.Score <= m.Score(&newCaller).Score {
		t.Errorf("new caller on a new route should score higher than either: %+v", v)
	}
	// Caller-3 calls svc-1 (and others) but never svc-0: for svc-0 it is a new caller.
	other := known
	other.Source = "spiffe://cluster.local/ns/shop/sa/caller-3"
	if v := m.Score(&other); v.Reasons[0].Code != ReasonNewCaller {
		t.Errorf("caller of other services: %+v", v)
	}
	// An unknown destination falls back to the global section.
	fallback := known
	fallback.Destination = "unknown.ns"
	if v := m.Score(&fallback); !v.Scored || v.Score >= m.Meta.Threshold {
		t.Errorf("global fallback: %+v", v)
	}
}

func TestScoreDoesNotAllocate(t *testing.T) {
	m := trainFixture(t, 1, nil)
	r := Request{Method: "GET", Path: "/items/12345", Source: "spiffe://cluster.local/ns/shop/sa/caller-1", Destination: "svc-1.shop"}
	w, s := m.Workload(r.Destination), new(Scratch)
	if n := testing.AllocsPerRun(100, func() { w.ScoreWith(&r, s) }); n != 0 {
		t.Errorf("Score allocates %v times", n)
	}
}

func TestTrainerCapsOneSource(t *testing.T) {
	cfg := DefaultTrainConfig()
	cfg.MaxPerSource = 10
	tr, _ := NewTrainer(cfg)
	for i := 0; i < 100; i++ {
		tr.Observe(&Request{Method: "GET", Path: "/x", Source: "noisy", Destination: "d"})
	}
	learned, skipped, _, held := tr.Samples()
	if learned != 10 || learned+skipped+held != 100 || held == 0 {
		t.Errorf("learned %d, skipped %d, held back %d: want 10 learned and the rest skipped or held back", learned, skipped, held)
	}
}

func TestTrainConfigValidate(t *testing.T) {
	cfg := DefaultTrainConfig()
	cfg.TargetFPR = 2
	cfg.MaxPerSource = 0
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "target_fpr") || !strings.Contains(err.Error(), "max_per_source") {
		t.Errorf("Validate: %v", err)
	}
}

func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"/", "/a/1/b", "/123e4567-e89b-12d3-a456-426614174000", "//x//", "\xff/\x00"} {
		f.Add(s)
	}
	buf := make([]byte, 0, MaxRouteBytes+8)
	f.Fuzz(func(t *testing.T, path string) {
		out := AppendTemplate(buf[:0], path)
		if len(out) > MaxRouteBytes+len("/…") {
			t.Fatalf("template of %d bytes", len(out))
		}
		if len(out) == 0 || out[0] != '/' {
			t.Fatalf("template %q does not start with /", out)
		}
	})
}

func FuzzScore(f *testing.F) {
	m := trainFixture(f, 1, nil)
	f.Add("GET", "/items/1", "spiffe://cluster.local/ns/shop/sa/caller-0", "svc-0.shop")
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, method, path, src, dst string) {
		v := m.Score(&Request{Method: method, Path: path, Source: src, Destination: dst})
		if v.Score < 0 || v.Score > 1 || v.NReason > MaxReasons {
			t.Fatalf("verdict out of range: %+v", v)
		}
	})
}

func FuzzDecode(f *testing.F) {
	m := trainFixture(f, 1, nil)
	b, _ := Encode(m)
	f.Add(b)
	// Sections: a workload's and the fallback.
	for _, w := range []string{"svc-0.shop", "nobody"} {
		s, _ := EncodeSection(m, w)
		f.Add(s)
	}
	f.Add([]byte("MWMD"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		// A section decodes the same way as a filter decodes it.
		if _, err := DecodeSection(data); (err == nil) != (m.SectionFor != "") {
			t.Fatalf("Decode says section for %q, DecodeSection says %v", m.SectionFor, err)
		}
		// Whatever decodes must re-encode to the same bytes and score safely.
		again, err := Encode(m)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("decoded model does not round-trip: %v", err)
		}
		m.Score(&Request{Method: "GET", Path: "/x", Source: "s", Destination: "d"})
	})
}

func BenchmarkScore(b *testing.B) {
	m := trainFixture(b, 1, nil)
	r := Request{Method: "GET", Path: "/items/12345", Source: "spiffe://cluster.local/ns/shop/sa/caller-1", Destination: "svc-1.shop"}
	b.ReportAllocs()
	for b.Loop() {
		m.Score(&r)
	}
}

func BenchmarkTrain(b *testing.B) {
	reqs := fixtureRequests()
	b.ReportAllocs()
	for b.Loop() {
		tr, _ := NewTrainer(DefaultTrainConfig())
		for i := range reqs {
			tr.Observe(&reqs[i])
		}
		if _, err := tr.Model(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(reqs)), "requests/op")
}

func hasReason(v Verdict, code ReasonCode) bool {
	for _, r := range v.ReasonList() {
		if r.Code == code {
			return true
		}
	}
	return false
}

// TestExtractDecodesRawBodies checks that a body that is not a form is one
// value with its percent-escapes decoded ('+' kept), and a multipart one
// as sent.
func TestExtractDecodesRawBodies(t *testing.T) {
	body := func(s *paramScratch) string {
		for i := 0; i < s.n; i++ {
			if string(s.params[i].name) == bodyParam {
				return string(s.params[i].value)
			}
		}
		t.Fatal("no body parameter")
		return ""
	}
	var s paramScratch
	for _, tc := range []struct{ ct, in, want string }{
		{"application/xml", `<q>%27%20or%201=1--+x</q>`, `<q>' or 1=1--+x</q>`},
		{"text/plain", "pay%3D%26%26%28e", "pay=&&(e"},
		{"text/plain", "100% sure %zz %4", "100% sure %zz %4"},
		{"", "no escapes here", "no escapes here"},
		{"multipart/form-data; boundary=x", "--x\r\n\r\na%27b\r\n--x--", "--x\r\n\r\na%27b\r\n--x--"},
	} {
		r := Request{Method: "POST", Path: "/", Body: []byte(tc.in)}
		if tc.ct != "" {
			r.Headers = []Header{{Name: "content-type", Value: tc.ct}}
		}
		s.extract(&r)
		if got := body(&s); got != tc.want {
			t.Errorf("body %q (%s): value %q, want %q", tc.in, tc.ct, got, tc.want)
		}
	}
}

// TestHostHeaderIsAuthority: a Host header is :authority under its HTTP/1
// name, which the model leaves out; traffic that carries it (a capture from
// packets) scores as the same traffic without it (a JSONL capture, or
// Envoy, which folds it into :authority), and a model learned with it
// scores traffic without it the same way too.
func TestHostHeaderIsAuthority(t *testing.T) {
	withHost := func(r Request) Request {
		r.Headers = append([]Header{{Name: "host", Value: r.Destination + ":8080"}}, r.Headers...)
		return r
	}
	train := func(host bool) *Model {
		tr := newTestTrainer(t)
		for _, r := range fixtureRequests() {
			if host {
				r = withHost(r)
			}
			tr.Observe(&r)
		}
		m, err := tr.Model()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, learnedHost := range []bool{false, true} {
		m := train(learnedHost)
		for i, r := range fixtureRequests()[:200] {
			a, b := m.Score(&r), m.Score(new(withHost(r)))
			if a.Score != b.Score || a.Reasons != b.Reasons {
				t.Fatalf("learned with host %v, request %d: %v %v without a Host header, %v %v with one", learnedHost, i, a.Score, a.Reasons, b.Score, b.Reasons)
			}
		}
	}
}

// TestMethodSeedIsTheMethodsHash holds the precomputed route seeds to the
// hash they stand for, so a route learned under any method is found.
func TestMethodSeedIsTheMethodsHash(t *testing.T) {
	for _, m := range []string{"GET", "POST", "PUT", "DELETE", "get", "GETX", "POS", ""} {
		if got, want := methodSeed(m), hashString(hashSeed, m); got != want {
			t.Errorf("methodSeed(%q) = %x, want %x", m, got, want)
		}
	}
}

// throughCodec is tr's model after Encode and Decode: what a filter reads.
func throughCodec(t testing.TB, tr *Trainer) *Model {
	t.Helper()
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if m, err = Decode(b); err != nil {
		t.Fatal(err)
	}
	return m
}

// newTestTrainer returns a trainer of the default configuration at a fixed
// time, as most tests train.
func newTestTrainer(t testing.TB) *Trainer {
	t.Helper()
	cfg := DefaultTrainConfig()
	cfg.Now = time.Unix(1_700_000_000, 0)
	tr, err := NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
