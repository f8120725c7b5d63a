package models

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

// hashShape and sameShape read a value as its shape without writing it
// out: at every length and alignment, hashShape(v) is the hash of
// ShapeValue(v), and sameShape tells v's shape from any other.
func TestHashShapeIsTheShapesHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	values := [][]byte{nil, all, []byte("1' OR '1'='1 --")}
	for n := 0; n < 40; n++ {
		for k := 0; k < 8; k++ {
			v := make([]byte, n)
			for i := range v {
				v[i] = byte(rng.IntN(256))
			}
			values = append(values, v)
		}
	}
	for _, v := range values {
		s := ShapeValue(string(v))
		if len(v) > MaxValueBytes {
			t.Fatalf("a test value of %d bytes", len(v))
		}
		if got, want := hashShape(hashSeed, v), hashBytes(hashSeed, []byte(s)); got != want {
			t.Fatalf("%q: hashShape %x, hash of its shape %x", v, got, want)
		}
		if !sameShape(s, v) || !isShape(s) {
			t.Fatalf("%q: sameShape(its shape) %v, isShape(its shape) %v", v, sameShape(s, v), isShape(s))
		}
		if len(v) == 0 {
			continue
		}
		if sameShape(s[:len(s)-1], v) || sameShape(s+"a", v) {
			t.Fatalf("%q: a shape of another length is the same", v)
		}
		// Another class at any one byte is another shape.
		i := rng.IntN(len(v))
		other := []byte(s)
		other[i] = classRepresentative[(int(classOf[v[i]])+1)%NClasses]
		if sameShape(string(other), v) {
			t.Fatalf("%q: byte %d of another class, same shape", v, i)
		}
	}
	if isShape("en") || isShape("ab") || !isShape("aA0 -.'") {
		t.Error("isShape: en, ab are not shapes; aA0 -.' is")
	}
}

// trainShaped trains, as the control plane does, on the records filters
// would ship of queries to GET /x of workload d, and returns the model after
// the codec.
func trainShaped(t *testing.T, queries func(i int) string, n int) *Model {
	t.Helper()
	return trainOnRecords(t, n, func(i int) Request {
		return Request{Method: "GET", Path: "/x", Query: queries(i), Source: "s", Destination: "d",
			Headers: []Header{{Name: "content-type", Value: []string{"text/plain", "application/json"}[i%2]}}}
	})
}

// trainOnRecords trains, as the control plane does, on the records filters
// would ship of n requests, and returns the model after the codec.
func trainOnRecords(t *testing.T, n int, req func(i int) Request) *Model {
	t.Helper()
	tr, err := NewTrainer(ShapedTrainConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r := req(i)
		s := ShapeRequest(&r)
		tr.Observe(&s)
	}
	return throughCodec(t, tr)
}

func paramNamed(w *Workload, name string) *ParamModel {
	for i := range w.Params {
		if w.Params[i].Name == name {
			return &w.Params[i]
		}
	}
	return nil
}

// Trained on shapes, a parameter closed in shape enumerates its shapes
// (ShapeEnum), through the codec: a value of a known shape is judged as
// any value is, one of a new shape pays the novelty on top. An open field
// and the content type (carried as it is) are not enumerated; the values
// of a model trained on values stay values.
func TestShapedTrainingEnumeratesClosedShapes(t *testing.T) {
	words := []string{"shoe", "boot", "sock"}
	m := trainShaped(t, func(i int) string {
		// kind: three words of one shape; note: free text, a new shape
		// every few values.
		note := strings.Repeat("z", 1+i%97) + fmt.Sprint(i)
		// size and code: one shape, but now and then one never seen
		// again: in one value of 200 (closed enough), of 80 (not).
		size, code := "m", "ab"
		if i%200 == 0 {
			size = strings.Repeat("x", 2+i/200)
		}
		if i%80 == 0 {
			code = strings.Repeat("y", 3+i/80)
		}
		return "kind=" + words[i%3] + "&note=" + note + "&size=" + size + "&code=" + code
	}, 2000)
	w := m.Workload("d")
	kind := paramNamed(w, "kind")
	if kind == nil || !kind.ShapeEnum || len(kind.Values) != 1 || kind.Values[0] != "aaaa" {
		t.Fatalf("kind: want its one shape aaaa enumerated, got %+v", kind)
	}
	if note := paramNamed(w, "note"); note == nil || len(note.Enum) != 0 {
		t.Errorf("note, open in shape, is enumerated: %+v", note)
	}
	// maxShapeNovelty: 10 shapes seen once in 2,000 values, and 25.
	if size := paramNamed(w, "size"); size == nil || !size.ShapeEnum || len(size.Values) != 11 {
		t.Errorf("size, a new shape in 0.5 %% of its values, is not enumerated: %+v", size)
	}
	if code := paramNamed(w, "code"); code == nil || len(code.Enum) != 0 {
		t.Errorf("code, a new shape in 1.25 %% of its values, is enumerated: %+v", code)
	}
	if ct := paramNamed(w, headerPrefix+"content-type"); ct == nil || len(ct.Enum) != 0 {
		t.Errorf("the content type is enumerated: %+v", ct)
	}

	score := func(q string) Verdict {
		return w.Score(&Request{Method: "GET", Path: "/x", Query: q + "&size=m&code=ab", Source: "s", Destination: "d",
			Headers: []Header{{Name: "content-type", Value: "text/plain"}}})
	}
	// A word never shipped, of the known shape, is not a new value; a word
	// of another length is, and scores above it.
	known, longer := score("kind=hats&note=zz1"), score("kind=hatss&note=zz1")
	if hasReason(known, ReasonNewValue) {
		t.Errorf("hats (shape aaaa) is a new value: %+v", known.ReasonList())
	}
	if !hasReason(longer, ReasonNewValue) || longer.Parts[PartValues] <= known.Parts[PartValues] || longer.Score <= known.Score {
		t.Errorf("hatss, a new shape, values part %.2f score %.3f (%v); hats %.2f %.3f",
			longer.Parts[PartValues], longer.Score, longer.ReasonList(), known.Parts[PartValues], known.Score)
	}
	// Graduate's evidence judges values as scoring does
	// (TestValueEvidenceAgrees): a known shape is judged too.
	for _, q := range []string{"kind=hats", "kind=hatss"} {
		r := Request{Method: "GET", Path: "/x", Query: q, Source: "s", Destination: "d"}
		v := w.Score(&r)
		if at, worst := w.valueEvidence(&r, new(Scratch)); at != 0 || worst != v.Parts[PartValues] {
			t.Errorf("%s: evidence %v (parameter %d), values part %v", q, worst, at, v.Parts[PartValues])
		}
	}
	// The known shape still reads the value: a value of that shape is not
	// waved through unread (its transitions are judged as before).
	if kind.knownValue([]byte("hats")) != true || kind.knownValue([]byte("hat1")) {
		t.Error("knownValue: hats has the shape aaaa, hat1 does not")
	}

	// Trained on values, the enumeration is of values.
	tr := newTestTrainer(t)
	for i := 0; i < 400; i++ {
		tr.Observe(&Request{Method: "GET", Path: "/x", Query: "kind=" + words[i%3], Source: "s", Destination: "d"})
	}
	vm, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	if k := paramNamed(vm.Workload("d"), "kind"); k == nil || k.ShapeEnum || len(k.Values) != 3 {
		t.Errorf("trained on values: %+v", k)
	}
}

// Abuse: records are a workload's word. One that ships values, not shapes,
// teaches their shapes (the model stays one every filter can read), and a
// model whose enumerated shapes are not shapes, or whose enumeration is of
// an unknown kind, is refused with the place named.
func TestShapeEnumerationRefusesWhatIsNotAShape(t *testing.T) {
	cfg := ShapedTrainConfig()
	tr, err := NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 400; i++ {
		// Unshaped: a lying or broken filter.
		tr.Observe(&Request{Method: "GET", Path: "/x", Query: "lang=" + url.QueryEscape([]string{"en", "de"}[i%2]), Source: "s", Destination: "d"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	lang := paramNamed(m.Workload("d"), "lang")
	if lang == nil || !lang.ShapeEnum || len(lang.Values) != 1 || lang.Values[0] != "aa" {
		t.Fatalf("lang learned from unshaped records: %+v", lang)
	}
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(b); err != nil {
		t.Fatalf("the model decodes: %v", err)
	}

	// Its enumeration as written, in the workload's part and the global
	// one: count 1, kind 1 (shapes), "aa".
	enum := []byte{1, 1, 2, 'a', 'a'}
	if bytes.Count(b[headerSize:], enum) == 0 {
		t.Fatal("the enumeration's bytes are not found")
	}
	for _, c := range []struct {
		name string
		to   []byte
		want string
	}{
		{"kind 3", []byte{1, 3, 2, 'a', 'a'}, "enum kind"},
		{"a value not a shape", []byte{1, 1, 2, 'e', 'n'}, "not a value's shape"},
	} {
		p := bytes.ReplaceAll(b[headerSize:], enum, c.to)
		bad, err := seal(kindMesh, p, MaxMeshBytes)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Decode(bad)
		if !errors.Is(err, ErrModelFormat) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "lang") {
			t.Errorf("%s: %v, want an error naming lang and %q", c.name, err, c.want)
		}
	}
}

// A model trained on the shapes filters ship knows every header scoring
// reads: a browser's request through a mesh carries more than a dozen
// (sec-ch-ua, sec-fetch-*, ...), and a header a record left out would be
// a new parameter on every request that has it.
func TestShapedTrainingLearnsEveryHeader(t *testing.T) {
	var hs []Header
	for i := 0; i < 40; i++ {
		hs = append(hs, Header{Name: fmt.Sprintf("x-browser-%d", i), Value: "v1"})
	}
	hs = append(hs, Header{Name: "x-request-id", Value: "abc"}) // left out by the model
	cfg := ShapedTrainConfig()
	tr, err := NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 400; i++ {
		r := Request{Method: "GET", Path: "/x", Query: fmt.Sprintf("page=%d", i%9), Source: "s", Destination: "d", Headers: hs}
		s := ShapeRequest(&r)
		if len(s.Headers) != 40 {
			t.Fatalf("the record carries %d of the 40 headers the model reads", len(s.Headers))
		}
		tr.Observe(&s)
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	v := m.Workload("d").Score(&Request{Method: "GET", Path: "/x", Query: "page=3", Source: "s", Destination: "d", Headers: hs})
	if hasReason(v, ReasonNewParam) || v.Parts[PartNames] != 0 {
		t.Errorf("a request with the headers training had: names part %.2f, reasons %v", v.Parts[PartNames], v.ReasonList())
	}
}

// A record carries the shape of the body's first MaxBodyPrefix bytes and
// the length of a longer one (BodyTail): the trainer learns a body that fit
// whole, or that the filter read to its end, as a value of its length, and
// one longer than what was read as cut.
func TestShapedTrainingLearnsALongBodysLength(t *testing.T) {
	for _, c := range []struct {
		size  int
		whole bool
	}{{3000, true}, {6000, true}, {DefaultBodyLimit + 1000, false}} {
		tr, err := NewTrainer(ShapedTrainConfig())
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 300; i++ {
			r := Request{Method: "POST", Path: "/notes", Source: "s", Destination: "d",
				Headers: []Header{{Name: "content-type", Value: "text/plain"}},
				Body:    []byte(`{"n":"` + strings.Repeat("word ", (c.size+i)/5) + `"}`)}
			s := ShapeRequest(&r)
			if len(s.Body) > MaxShippedBody || s.RequestBytes != int64(len(r.Body)) {
				t.Fatalf("a record of %d body bytes for %d, RequestBytes %d", len(s.Body), len(r.Body), s.RequestBytes)
			}
			tr.Observe(&s)
		}
		m, err := tr.Model()
		if err != nil {
			t.Fatal(err)
		}
		body := paramNamed(m.Workload("d"), bodyParam)
		switch {
		case body == nil:
			t.Fatalf("%d-byte bodies: no model of the body", c.size)
		case c.whole && (body.Count == 0 || body.LenMean < float64(c.size) || body.LenMean > float64(c.size+300)):
			t.Errorf("%d-byte bodies: %d learned, mean length %.0f", c.size, body.Count, body.LenMean)
		case !c.whole && body.Count != 0:
			t.Errorf("%d-byte bodies, read to %d: %d learned as whole, mean length %.0f", c.size, DefaultBodyLimit, body.Count, body.LenMean)
		}
	}
}

// Scoring reads a long value whole and judges its whole length: a model
// trained on shapes learned the same lengths, from a query token of a few
// KiB as from a short value (a shape cut at 1 KiB made every longer value
// look too long).
func TestShapedTrainingLearnsLongValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const al = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	token := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = al[rng.IntN(len(al))]
		}
		return string(b)
	}
	req := func() Request {
		return Request{Method: "GET", Path: "/cb", Query: "state=" + token(1500+rng.IntN(1500)), Source: "s", Destination: "d"}
	}
	m := trainOnRecords(t, 600, func(int) Request { return req() })
	w := m.Workload("d")
	flagged := 0
	for i := 0; i < 200; i++ {
		r := req()
		if v := w.Score(&r); v.Score > m.Meta.Threshold || hasReason(v, ReasonValueLength) {
			flagged++
		}
	}
	if flagged > 2 {
		t.Errorf("%d of 200 normal requests with long values flagged or too long", flagged)
	}
}
