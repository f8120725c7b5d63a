package models

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

// A record's query and form values that had keywords carry a mark of how
// many (up to three), before the digest's mark; a value without keywords
// carries none; the record says it marks them.
func TestShapesCarryKeywordMarks(t *testing.T) {
	k := testKey(t, keyA)
	r := Request{Method: "GET", Path: "/s", Query: "q=union+select+1&n=red&x=%3B&many=1%27+or+1%3D1--+%3B&long=" + strings.Repeat("ab+", 600) + "select",
		Headers: []Header{{Name: "user-agent", Value: "Mozilla/5.0 (X11; Linux)"}, {Name: "cookie", Value: strings.Repeat("k=v; ", 600)}}}
	s := ShapeRequestDigest(&r, &k)
	if !s.KeywordMarks {
		t.Fatal("a record does not say it marks keywords")
	}
	for _, c := range []struct{ name, mark string }{{"q", "~2~~"}, {"x", "~1~~"}, {"many", "~3~~"}, {"long", "~1~a"}, {"n", "~"}} {
		i := strings.Index(s.Query, c.name+"=")
		if i < 0 || !strings.HasPrefix(s.Query[i+len(c.name)+1:], c.mark) || c.name == "n" && strings.HasPrefix(s.Query[i+2:], "~1~") {
			t.Errorf("%s: record query %.80q, want its value to start %q", c.name, s.Query[i:], c.mark)
		}
	}
	if strings.Contains(s.Headers[0].Value, "~") {
		t.Errorf("a header's shape carries a mark: %q", s.Headers[0].Value)
	}
	// The digest marks are told from keyword marks.
	if n := DigestMarks([]byte(s.Query)); n != 4 {
		t.Errorf("%d digest marks counted in %q, want 4", n, s.Query)
	}
	// Read as the trainer reads a record, the marks come off: the values
	// read as the request's, of the same lengths (a long value's windows
	// start up to a mark's length apart), each value's first window with
	// its whole value's keywords.
	var a, b paramScratch
	a.extract(&r)
	b.extract(AsRead(&s))
	if a.n != b.n {
		t.Fatalf("%d parameters, %d from the record", a.n, b.n)
	}
	want := map[string]int8{"q": 2, "n": 0, "x": 1, "many": 3, "long": 1, "user-agent": kwUnknown, "cookie": kwUnknown}
	for i := 0; i < a.n; i++ {
		pa, pb := &a.params[i], &b.params[i]
		d := pa.full - pb.full
		if string(pa.name) != string(pb.name) || pa.last != pb.last || d != 0 && (pa.last || d < 0 || d > KeywordMarkLen) {
			t.Errorf("parameter %d: %s of %d (full %d), from the record %s of %d (full %d)", i, pa.name, len(pa.value), pa.full, pb.name, len(pb.value), pb.full)
		}
		if w := want[string(pb.name)]; pb.cont && pb.kw != 0 || !pb.cont && pb.kw != w {
			t.Errorf("%s (window after the first: %v): the record says %d keywords, want %d", pb.name, pb.cont, pb.kw, w)
		}
	}
}

// A record stays within the collector's bounds with its keyword marks: a
// mark needs a keyword of at least one byte, so a query of the shortest
// values that carry one (";") shapes to no more than three bytes per byte.
func TestKeywordMarksStayWithinTheBounds(t *testing.T) {
	k := testKey(t, keyA)
	q := strings.Repeat("=;&", (64<<10)/3)
	r := Request{Method: "POST", Path: "/s", Query: q, Body: []byte(q[:MaxBodyPrefix]),
		Headers: []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}}
	s := ShapeRequestDigest(&r, &k)
	if len(s.Query) > MaxShippedQuery || len(s.Body) > MaxShippedBody {
		t.Errorf("a record's query of %d bytes (bound %d), body of %d (bound %d)", len(s.Query), MaxShippedQuery, len(s.Body), MaxShippedBody)
	}
	if !strings.HasPrefix(s.Query, "=~1~~") {
		t.Errorf("record query %.40q", s.Query)
	}
}

// kwRequest is a search: q is free text of a few words, comment is text
// that quotes code in some of its values.
func kwRequest(rng *rand.Rand) Request {
	words := []string{"red", "shoes", "garden", "lamp", "table", "winter", "coat", "blue", "small", "chair"}
	var q []string
	for n := 2 + rng.IntN(3); n > 0; n-- {
		q = append(q, words[rng.IntN(len(words))])
	}
	comment := strings.Join(q, " ") + " " + words[rng.IntN(len(words))]
	if rng.IntN(3) == 0 {
		comment = "use select " + comment + " from the list"
	}
	return Request{Method: "GET", Path: "/search", Source: "s", Destination: "d",
		Query: "q=" + url.QueryEscape(strings.Join(q, " ")) + "&comment=" + url.QueryEscape(comment)}
}

// A model trained on records that mark keywords judges them as the model
// trained on values does: a field whose values never had one pays for an
// injection of the same shape as its normal text (which shapes alone cannot
// tell), a field whose values often had them does not.
func TestShapedTrainingLearnsKeywords(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	m := trainOnRecords(t, 3000, func(int) Request { return kwRequest(rng) })
	w := m.Workload("d")
	q, comment := paramNamed(w, "q"), paramNamed(w, "comment")
	if q == nil || comment == nil {
		t.Fatal("parameters not learned")
	}
	if q.KeywordBase != q.Count || q.KeywordValues != 0 || comment.KeywordBase != comment.Count || comment.KeywordValues < comment.Count/5 {
		t.Errorf("keywords learned: q %d of %d (base %d), comment %d of %d (base %d)", q.KeywordValues, q.Count, q.KeywordBase,
			comment.KeywordValues, comment.Count, comment.KeywordBase)
	}
	score := func(query string) Verdict {
		r := Request{Method: "GET", Path: "/search", Source: "s", Destination: "d", Query: query}
		return w.Score(&r)
	}
	// The same shape: lower-case words and spaces.
	plain, sqli := score("q=red+table+lamp+blue+chair+shoes&comment=red+lamp"), score("q=red+union+select+from+users+shoes&comment=red+lamp")
	if sqli.Score <= m.Meta.Threshold || !hasReason(sqli, ReasonKeywords) || plain.Score >= m.Meta.Threshold {
		t.Errorf("q: plain %.3f %v, injected %.3f %v (threshold %.3f)", plain.Score, plain.ReasonList(), sqli.Score, sqli.ReasonList(), m.Meta.Threshold)
	}
	if v := score("q=red+lamp&comment=use+select+red+lamp+from+the+list"); v.Score >= m.Meta.Threshold {
		t.Errorf("comment with its usual keywords: %.3f %v", v.Score, v.ReasonList())
	}
}

// Abuse and age: records that do not say they mark keywords (an older
// filter's) teach no keyword base, so a value's keywords are not judged
// against values whose keywords no one read; a header's shape never
// teaches one; a malformed or out-of-range mark is read as bytes, and a
// mark in a live request's value is a value's bytes.
func TestKeywordMarksAreRecordsOnly(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	tr, err := NewTrainer(ShapedTrainConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		r := kwRequest(rng)
		r.Headers = []Header{{Name: "x-note", Value: "select 1"}}
		s := ShapeRequest(&r)
		if i%2 == 0 {
			s.KeywordMarks = false // an older filter's record
			s.Query = string(appendUnmarked(nil, []byte(s.Query)))
		}
		tr.Observe(&s)
	}
	w := throughCodec(t, tr).Workload("d")
	q, note := paramNamed(w, "q"), paramNamed(w, headerPrefix+"x-note")
	if q == nil || note == nil {
		t.Fatal("parameters not learned")
	}
	if q.KeywordBase == 0 || q.KeywordBase >= q.Count || note.KeywordBase != 0 {
		t.Errorf("q: base %d of %d values; header: base %d", q.KeywordBase, q.Count, note.KeywordBase)
	}

	for _, c := range []struct {
		value string
		kw    int8
		rest  string
	}{
		{"~2~aaa", 2, "aaa"}, {"~0~aaa", 0, "~0~aaa"}, {"~7~aaa", 0, "~7~aaa"}, {"~?~aaa", int8(kwUnknown), "aaa"}, {"~~aaa", 0, "~~aaa"},
	} {
		r := Request{Method: "GET", Path: "/search", Query: "q=" + c.value, KeywordMarks: true}
		var s paramScratch
		s.extract(AsRead(&r))
		if p := &s.params[0]; p.kw != c.kw || string(p.value) != c.rest {
			t.Errorf("record value %q: read %q with %d keywords, want %q with %d", c.value, p.value, p.kw, c.rest, c.kw)
		}
		live := Request{Method: "GET", Path: "/search", Query: "q=" + c.value}
		s.extract(&live)
		if p := &s.params[0]; p.kw != kwLive || string(p.value) != c.value {
			t.Errorf("live value %q: read %q, kw %d", c.value, p.value, p.kw)
		}
	}
}

// Which requests are held back does not depend on the keyword marks.
func TestHoldBackIgnoresKeywordMarks(t *testing.T) {
	held := func(marks bool) uint64 {
		tr, err := NewTrainer(ShapedTrainConfig())
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3000; i++ {
			r := Request{Method: "GET", Path: "/s", Source: "s", Destination: "d", Query: fmt.Sprint("q=select+", i%40, "&n=", i)}
			s := ShapeRequest(&r)
			if !marks {
				s.Query, s.KeywordMarks = string(appendUnmarked(nil, []byte(s.Query))), false
			}
			tr.Observe(&s)
		}
		_, _, _, h := tr.Samples()
		return h
	}
	if a, b := held(true), held(false); a != b || a == 0 {
		t.Errorf("held back: %d with keyword marks, %d without", a, b)
	}
}

// A model whose keyword counts contradict each other (more values with
// keywords than values whose keywords were known, or more of those than
// values) is refused, with the parameter named.
func TestDecodeRefusesKeywordCounts(t *testing.T) {
	m := trainOnRecords(t, 400, func(i int) Request {
		return kwRequest(rand.New(rand.NewPCG(uint64(i), 9)))
	})
	p := paramNamed(m.Workload("d"), "comment")
	for _, bad := range [][2]uint32{{p.KeywordValues, p.KeywordValues - 1}, {0, p.Count + 1}} {
		saved := *p
		p.KeywordValues, p.KeywordBase = bad[0], bad[1]
		b, err := Encode(m)
		*p = saved
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(b); err == nil || !strings.Contains(err.Error(), "param comment") {
			t.Errorf("%d values with keywords of a base of %d: %v", bad[0], bad[1], err)
		}
	}
}
