package models

import (
	"net/url"
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
		score, code := w.Graduate(r, &v, &none, s)
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
		score, _ := w.Graduate(&nc, &v, &structural, s)
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
	score, code := w.Graduate(&r, &v, &structural, s)
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
	if score, code := w.Graduate(&r, &v, &structural, s); score > 0.5 {
		t.Errorf("a new plain route, structure set aside: %v for %v (verdict %v, %+v)", score, code, v.Score, v.ReasonList())
	}
	// A body held whole is read again with the path (a body of words
	// training knew).
	r.Method, r.Body = "POST", []byte("lang=en&page=3")
	r.RequestBytes = int64(len(r.Body))
	v = w.ScoreWith(&r, s)
	if score, code := w.Graduate(&r, &v, &structural, s); score > 0.5 {
		t.Errorf("a new plain route with a small body, structure set aside: %v for %v (verdict %v, %+v)", score, code, v.Score, v.ReasonList())
	}
	r.Method, r.Body, r.RequestBytes = "GET", nil, 0
	r.Path = "/api/v1/files/..%2f..%2f..%2fetc%2fpasswd"
	v = w.ScoreWith(&r, s)
	if score, code := w.Graduate(&r, &v, &structural, s); !(score > 0.5) {
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
