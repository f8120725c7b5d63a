package models

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// graduateFixture is a ten-service mesh model and requests to judge: its
// normal traffic, and the same with an injection in one parameter, from a
// new caller, on a new route.
func graduateFixture(t *testing.T) (*Model, []Request) {
	t.Helper()
	m, f := trainMesh(t, 10, 20_000)
	var out []Request
	for i := 0; i < 3000; i++ {
		r := f.request()
		switch i % 6 {
		case 1:
			if r.Query != "" {
				name, _, _ := strings.Cut(r.Query, "=")
				r.Query += "&" + name + "=" + url.QueryEscape("1' union select password from users--")
			}
		case 2:
			r.Source = "spiffe://cluster.local/ns/shop/sa/newcomer"
		case 3:
			r.Path = "/api/v2/release/" + r.Path[len("/api/v1/"):]
		case 4:
			r.Path = "/api/v2/release/export"
			r.Source = "spiffe://cluster.local/ns/shop/sa/newcomer"
			r.Query = ""
		}
		out = append(out, r)
	}
	return m, out
}

// TestGraduateSetsAsideNothingExactly: with nothing set aside, Graduate
// gives the verdict's own score and strongest reason.
func TestGraduateSetsAsideNothingExactly(t *testing.T) {
	m, reqs := graduateFixture(t)
	s := new(Scratch)
	var none ReasonSet
	for i := range reqs {
		r := &reqs[i]
		w := m.Workload(r.Destination)
		v := w.ScoreWith(r, s)
		score, code := w.Graduate(&v, &none)
		if d := score - v.Score; d > 1e-12 || d < -1e-12 {
			t.Fatalf("request %d: Graduate %v, score %v", i, score, v.Score)
		}
		if v.NReason > 0 && code != v.Reasons[0].Code {
			t.Fatalf("request %d: Graduate names %v, the verdict %v", i, code, v.Reasons[0].Code)
		}
	}
}

// TestGraduateSetsAsideStructure: setting the structural reasons aside
// takes a new caller's and a new route's surprise out exactly (the score of
// a request only new in structure falls to that of its known twin), and
// leaves an injection's.
func TestGraduateSetsAsideStructure(t *testing.T) {
	m, f := trainMesh(t, 10, 20_000)
	s := new(Scratch)
	structural := StructuralReasons
	lifted := 0
	for i := 0; i < 500; i++ {
		r := f.request()
		w := m.Workload(r.Destination)
		known := w.ScoreWith(&r, s)
		nc := r
		nc.Source = "spiffe://cluster.local/ns/shop/sa/newcomer"
		v := w.ScoreWith(&nc, s)
		score, _ := w.Graduate(&v, &structural)
		if d := score - known.Score; d > 1e-9 || d < -1e-9 {
			t.Fatalf("a new caller with its caller set aside scores %v, its known twin %v", score, known.Score)
		}
		if v.Score > w.CalCenter && score <= 0.5 {
			lifted++
		}
	}
	// An injection from a new caller keeps its value and content surprise.
	r := f.request()
	for r.Query == "" {
		r = f.request()
	}
	name, _, _ := strings.Cut(r.Query, "=")
	r.Query += "&" + name + "=" + url.QueryEscape("1' union select password from users--")
	r.Source = "spiffe://cluster.local/ns/shop/sa/newcomer"
	w := m.Workload(r.Destination)
	v := w.ScoreWith(&r, s)
	score, code := w.Graduate(&v, &structural)
	if !(score > 0.5) || StructuralReasons.Has(code) || code == ReasonNone {
		t.Errorf("an injection from a new caller, structure set aside: %v for %v (verdict %v, %+v)", score, code, v.Score, v.ReasonList())
	}
}

// TestGraduateNewRouteWords: a new route's plain path is structure, its
// words not content; a path that can hide escapes is still read.
func TestGraduateNewRouteWords(t *testing.T) {
	m, f := trainMesh(t, 10, 20_000)
	s := new(Scratch)
	structural := StructuralReasons
	r := f.request()
	r.Path, r.Query, r.Body = "/api/v2/release/export/7", "", nil
	w := m.Workload(r.Destination)
	v := w.ScoreWith(&r, s)
	if score, code := w.Graduate(&v, &structural); score > 0.5 {
		t.Errorf("a new plain route, structure set aside: %v for %v (verdict %v, %+v)", score, code, v.Score, v.ReasonList())
	}
	// A small body (words training knew) with the path known.
	r.Method, r.Body = "POST", []byte("lang=en&page=3")
	r.RequestBytes = int64(len(r.Body))
	v = w.ScoreWith(&r, s)
	if score, code := w.Graduate(&v, &structural); score > 0.5 {
		t.Errorf("a new plain route with a small body, structure set aside: %v for %v (verdict %v, %+v)", score, code, v.Score, v.ReasonList())
	}
	// A body past MaxBodyPrefix, read as it passed, is judged whole with
	// the path known: an injection at its end is not set aside with the
	// route, nor with the body's size.
	r.Path, r.Body = "/api/v2/release/export", longJSON(300, "1' union select password from users--")
	r.RequestBytes = int64(len(r.Body))
	r.Headers = append(r.Headers, Header{Name: "content-type", Value: "application/json"})
	v = scoreInChunks(w, &r, s, 1000)
	bigAside := structural
	bigAside.Union(&SizeReasons)
	if score, code := w.Graduate(&v, &bigAside); !(score > 0.5) || code == ReasonNone {
		t.Errorf("an injection at the end of a %d-byte body on a new route, structure and size set aside: %v for %v (verdict %v, %+v)",
			len(r.Body), score, code, v.Score, v.ReasonList())
	}
	r.Headers = r.Headers[:len(r.Headers)-1]
	r.Method, r.Body, r.RequestBytes = "GET", nil, 0
	r.Path = "/api/v1/files/..%2f..%2f..%2fetc%2fpasswd"
	v = w.ScoreWith(&r, s)
	if score, code := w.Graduate(&v, &structural); !(score > 0.5) {
		t.Errorf("traversal in a new route's path, structure set aside: %v for %v (verdict %v, %+v)", score, code, v.Score, v.ReasonList())
	}
}

// TestValueEvidenceAgrees: the parameter ValueEvidence names is the one
// whose value drove the verdict's value reason, with the same surprise.
func TestValueEvidenceAgrees(t *testing.T) {
	m, reqs := graduateFixture(t)
	s := new(Scratch)
	checked := 0
	for i := range reqs {
		r := &reqs[i]
		w := m.Workload(r.Destination)
		v := w.ScoreWith(r, s)
		for _, rs := range v.ReasonList() {
			if !ValueReasons.Has(rs.Code) {
				continue
			}
			at, worst := w.valueEvidence(r, s)
			// The reason's surprise is the values part's tail surprise; the
			// evidence is the part's own, before calibration.
			if at < 0 || worst != v.Parts[PartValues] {
				t.Fatalf("request %d (%s?%s): value reason %v of %v (part %v), evidence %d of %v", i, r.Path, r.Query, rs.Code, rs.Surprise, v.Parts[PartValues], at, worst)
			}
			name, value, _, ok := w.ValueEvidence(r, s)
			if !ok || len(name) == 0 {
				t.Fatalf("request %d: no evidence", i)
			}
			if i%6 == 1 && !strings.Contains(string(value), "union") && rs.Code == ReasonKeywords {
				t.Errorf("request %d: keywords named on %s=%q, not the injection", i, name, value)
			}
			checked++
		}
	}
	if checked < 100 {
		t.Errorf("only %d value reasons checked", checked)
	}
}

func TestReasonSets(t *testing.T) {
	for _, n := range ReasonNames() {
		c, ok := ParseReason(n)
		if !ok || c.String() != n {
			t.Errorf("%s: parsed as %v, %v", n, c, ok)
		}
	}
	if _, ok := ParseReason("sql"); ok {
		t.Error("an unknown name parsed")
	}
	d := DefaultDenyReasons()
	for _, c := range []ReasonCode{ReasonNewCaller, ReasonNewRoute, ReasonNewEdge, ReasonNewParam, ReasonStatus} {
		if d.Has(c) {
			t.Errorf("the default denies %v", c)
		}
	}
	for _, c := range []ReasonCode{ReasonKeywords, ReasonValueShape, ReasonContent, ReasonContentNovel, ReasonRequestSize} {
		if !d.Has(c) {
			t.Errorf("the default does not deny %v", c)
		}
	}
	c := d.Complement()
	if c.Has(ReasonKeywords) || !c.Has(ReasonNewCaller) {
		t.Error("complement")
	}
}

// scoreInChunks scores r as the filter does a request with a body: headers
// first, then the body fed in chunks of n bytes, then the end.
func scoreInChunks(w *Workload, r *Request, s *Scratch, n int) Verdict {
	var v Verdict
	q := *r
	q.Body = nil
	w.Begin(&q, s, &v)
	for b := r.Body; len(b) > 0; {
		k := min(n, len(b))
		w.Feed(b[:k], s)
		b = b[k:]
	}
	w.End(&q, s, &v)
	return v
}

// longJSON is a JSON body of the mesh fixture's kind, n items long, with
// tail as the last item's name.
func longJSON(n int, tail string) []byte {
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		name := "alpha"
		if i == n-1 && tail != "" {
			name = tail
		}
		b.WriteString(`{"id":` + strconv.Itoa(i) + `,"name":` + strconv.Quote(name) + `}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// TestAsKnownIsScoringWithThePathKnown: on a new route whose path is words
// alone, scoring works out, beside the content part with the path read, the
// one with the path taken as known (Verdict.asKnown, what Graduate judges
// when the route is set aside), as the request passes. It equals scoring
// the request with the path known, also for a body past MaxBodyPrefix fed
// in chunks, which nothing could read again; and the verdict itself is the
// one with the path read.
func TestAsKnownIsScoringWithThePathKnown(t *testing.T) {
	m, f := trainMesh(t, 10, 20_000)
	bodies := [][]byte{nil, []byte(`{"id":7,"name":"alpha"}`), longJSON(300, ""), longJSON(300, "1' union select password from users--")}
	if len(bodies[2]) <= MaxBodyPrefix {
		t.Fatalf("the long body is %d bytes, not past MaxBodyPrefix", len(bodies[2]))
	}
	paths := []string{"/api/v2/release/export", "/api/v2/release/export/7", "/backup/orders.old", "/a"}
	s, ref := new(Scratch), new(Scratch)
	ref.params.pathKnown = true
	checked := 0
	for i := 0; i < 160; i++ {
		r := f.request()
		r.Path = paths[i%len(paths)]
		r.Body = bodies[i/len(paths)%len(bodies)]
		r.RequestBytes = int64(len(r.Body))
		if r.Body != nil {
			r.Method = "POST"
			r.Headers = append(r.Headers, Header{Name: "content-type", Value: "application/json"})
		}
		w := m.Workload(r.Destination)
		v := scoreInChunks(w, &r, s, 1000)
		if v.Parts[PartRoute] == 0 {
			t.Fatalf("request %d (%s): the route is known to the model", i, r.Path)
		}
		if !v.hasAsKnown {
			t.Fatalf("request %d (%s): no content part with the path known", i, r.Path)
		}
		k := scoreInChunks(w, &r, ref, 1000)
		if v.asKnown != k.Parts[PartContent] || k.Parts[PartContent] > 0 && v.asKnownCode != k.Codes[PartContent] {
			t.Fatalf("request %d (%s, %d-byte body): with the path known %v %v, scoring with it known %v %v",
				i, r.Path, len(r.Body), v.asKnown, v.asKnownCode, k.Parts[PartContent], k.Codes[PartContent])
		}
		// The verdict is scoring's with the path read: the same request
		// read in one piece.
		whole := w.ScoreWith(&r, new(Scratch))
		if whole.Score != v.Score || whole.Parts != v.Parts {
			t.Fatalf("request %d (%s): in chunks %v %v, whole %v %v", i, r.Path, v.Score, v.Parts, whole.Score, whole.Parts)
		}
		checked++
	}
	// A known route, or a path that is not words alone, has none.
	r := f.request()
	w := m.Workload(r.Destination)
	if v := w.ScoreWith(&r, s); v.hasAsKnown {
		t.Errorf("a known route %s has a content part with the path known", r.Path)
	}
	r.Path = "/api/v1/files/..%2f..%2fetc%2fpasswd"
	if v := w.ScoreWith(&r, s); v.hasAsKnown {
		t.Errorf("the path %s, not words alone, has a content part with the path known", r.Path)
	}
	t.Logf("%d requests on new routes checked", checked)
}
