package models

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// readValue is one value a body reads as: its name, its length, whether it
// is whole, and its first window.
type readValue struct {
	name  string
	full  int
	whole bool
	first string
}

// valueSink collects the values of a request's parameters as they are read.
type valueSink struct{ out []readValue }

func (k *valueSink) batch(s *paramScratch, _ bool) {
	for i := 0; i < s.n; i++ {
		p := &s.params[i]
		if p.header {
			continue
		}
		if !p.cont {
			k.out = append(k.out, readValue{name: string(p.name), first: string(p.value)})
		}
		v := &k.out[len(k.out)-1]
		v.full, v.whole = p.full, p.last
	}
}

// bodyValues reads r's body as scoring does (up to DefaultBodyLimit), or,
// for a record of a model trained on shapes, as the trainer does.
func bodyValues(r *Request, record bool) []readValue {
	var k valueSink
	var s paramScratch
	body, cut := r.Body, len(r.Body) > DefaultBodyLimit
	if record {
		t, err := NewTrainer(ShapedTrainConfig())
		if err != nil {
			panic(err)
		}
		var d *Request
		d, cut = t.readable(r)
		body = d.Body
	} else {
		body = body[:min(len(body), DefaultBodyLimit)]
	}
	b := *r
	b.marked = record
	b.Query, b.Headers = "", nil
	for _, h := range r.Headers {
		if h.Name == "content-type" {
			b.Headers = append(b.Headers, h)
		}
	}
	s.begin(&b, &k)
	s.feed(body)
	s.finish(cut)
	return k.out
}

var (
	formCT = []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}
	jsonCT = []Header{{Name: "content-type", Value: "application/json"}}
)

// longBodies are bodies past the prefix of every kind a record carries.
func longBodies() []struct {
	name    string
	headers []Header
	body    string
} {
	words := func(n int, sep string) string {
		w := []string{"lorem", "ipsum", "dolor", "sit", "amet", "o'neil", "x<y", "a%2Bb", "50%"}
		var b strings.Builder
		for i := 0; b.Len() < n; i++ {
			if i > 0 {
				b.WriteString(sep)
			}
			b.WriteString(w[i%len(w)])
		}
		return b.String()
	}
	return []struct {
		name    string
		headers []Header
		body    string
	}{
		{"a long field first", formCT, "notes=" + words(6000, "+") + "&category=sports&qty=3&email=a%40b.example&agree"},
		{"a long field last", formCT, "a=1&b=two&notes=" + words(9000, "%20")},
		{"a name across the prefix's end", formCT, strings.Repeat("k=v&", MaxBodyPrefix/4-1) + "name_across=" + words(300, "+") + "&z=1"},
		{"many short fields", formCT, strings.Repeat("field=value&", 1200) + "last=1"},
		{"escapes and empty pairs", formCT, "x=" + strings.Repeat("%41%2", 1000) + "&&&y=%zz%4&z=+%2B+&w"},
		{"a form without a content type", nil, "notes=" + words(5000, "-") + "&tag=a&n=12"},
		{"json", jsonCT, `{"notes":"` + words(7000, " ") + `"}`},
		{"text without a content type", nil, words(6000, " ")},
		{"multipart", []Header{{Name: "content-type", Value: "multipart/form-data; boundary=x"}}, "--x\r\n\r\n" + words(5000, " ") + "\r\n--x--"},
		{"a form past the body limit", formCT, "a=1&notes=" + words(DefaultBodyLimit, "+")},
		{"json of many fields", jsonCT, `{"items":[` + strings.Repeat(`{"id":12,"name":"a \"b\" & c","tags":["x","y=1"]},`, 60) + `{"id":1}],"total":3}`},
		{"json of very many fields", jsonCT, `{"a":{"b":{"c":[` + strings.Repeat(`1,`, 3000) + `2]}}}`},
		{"json past the body limit", jsonCT, `{"a":1,"notes":"` + words(DefaultBodyLimit, " ") + `"}`},
		{"json cut in an escape", jsonCT, `{"a":"` + words(5000, " ") + `\u00`},
		{"json that breaks", jsonCT, `{"a":"` + words(3000, " ") + `", x ` + words(3000, "&") + `}`},
		{"json nested deeper than read", jsonCT, `{"k":` + strings.Repeat(`[`, maxJSONDepth+2) + words(5000, ",") + `}`},
	}
}

// A record of a long body reads, to the trainer, as the body reads to
// scoring: the same values, by name, of the same lengths, whole or cut
// alike, each starting with the same classes (a value past the prefix
// carries the shape of its first maxTailShape bytes).
func TestLongBodyRecordReadsAsTheBody(t *testing.T) {
	for _, c := range longBodies() {
		r := Request{Method: "POST", Path: "/p", Headers: c.headers, Body: []byte(c.body), RequestBytes: int64(len(c.body))}
		shaped := ShapeRequest(&r)
		if len(shaped.Body) > MaxShippedBody {
			t.Errorf("%s: a record's body of %d bytes, over %d", c.name, len(shaped.Body), MaxShippedBody)
		}
		want, got := bodyValues(&r, false), bodyValues(&shaped, true)
		if c.name == "many short fields" || c.name == "json of very many fields" {
			// Past MaxBodyTail, pairs are left out: those that came are
			// read as sent.
			if len(got) >= len(want) || len(got) < 300 {
				t.Errorf("%s: %d values of %d carried", c.name, len(got), len(want))
			}
			want = want[:len(got)]
		}
		if len(want) != len(got) {
			t.Errorf("%s: %d values, %d from the record", c.name, len(want), len(got))
			continue
		}
		for i := range want {
			w, g := want[i], got[i]
			if w.name != g.name || w.whole != g.whole || w.whole && w.full != g.full {
				t.Errorf("%s: value %d is %s of %d bytes (whole %v), from the record %s of %d (whole %v)", c.name, i, w.name, w.full, w.whole, g.name, g.full, g.whole)
				continue
			}
			n := min(len(w.first), len(g.first), maxTailShape)
			for j := 0; j < n; j++ {
				if ClassOf(w.first[j]) != ClassOf(g.first[j]) {
					t.Errorf("%s: %s byte %d: class %d, from the record %d", c.name, w.name, j, ClassOf(w.first[j]), ClassOf(g.first[j]))
					break
				}
			}
		}
	}
}

// A filter reads a body as the proxy passes it, in chunks of any size: the
// record is the same as of the body read at once.
func TestBodyTailReadsInAnyChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range longBodies() {
		r := Request{Method: "POST", Path: "/p", Headers: c.headers, Body: []byte(c.body)}
		want := string(ShapeBody(&r))
		for round := 0; round < 20; round++ {
			var tail BodyTail
			kept := Request{Method: "POST", Path: "/p", Headers: c.headers}
			rest := r.Body
			for len(rest) > 0 {
				n := min(len(rest), 1+rng.IntN(3000))
				if round%5 == 0 {
					n = min(len(rest), 1+rng.IntN(3))
				}
				tail.Keep(&kept, rest[:n], DefaultBodyLimit, true)
				rest = rest[n:]
			}
			tail.EndKeep(&kept, DefaultBodyLimit, true)
			if got := string(AppendShapeBody(nil, &kept, &tail, nil)); got != want {
				t.Errorf("%s, round %d: the record differs from the body's read at once:\n%.300q\n%.300q", c.name, round, got, want)
				break
			}
		}
	}
}

// A form posted with a long field first: every field past the prefix
// reaches the trainer, so a model trained on the records filters ship
// knows them, and still sees a renamed one as new.
func TestShapedTrainingLearnsFieldsPastThePrefix(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	cats := []string{"sports", "music", "books"}
	form := func(field string) Request {
		notes := make([]byte, 5000+rng.IntN(2000))
		for i := range notes {
			notes[i] = "abcdefghij+"[rng.IntN(11)]
		}
		body := "notes=" + string(notes) + "&category=" + cats[rng.IntN(3)] + "&" + field + "=" + fmt.Sprint(rng.IntN(9)+1)
		return Request{Method: "POST", Path: "/order", Source: "s", Destination: "d", Headers: formCT, Body: []byte(body), RequestBytes: int64(len(body))}
	}
	m := trainOnRecords(t, 2000, func(int) Request { return form("qty") })
	w := m.Workload("d")
	for _, name := range []string{"category", "qty"} {
		if paramNamed(w, name) == nil {
			t.Errorf("%s, past the prefix, not learned", name)
		}
	}
	flagged := 0
	for i := 0; i < 200; i++ {
		r := form("qty")
		if v := w.Score(&r); hasReason(v, ReasonNewParam) || v.Score > m.Meta.Threshold {
			flagged++
		}
	}
	if flagged > 2 {
		t.Errorf("%d of 200 normal posts flagged or with a new parameter", flagged)
	}
	r := form("quantity")
	if v := w.Score(&r); !hasReason(v, ReasonNewParam) {
		t.Errorf("a renamed field past the prefix: reasons %v", v.ReasonList())
	}
}

// Abuse: a mark is a workload's word. A length it claims is drawn out to
// at most DefaultBodyLimit bytes in all; a malformed mark is read as the
// value's bytes; a model trained on values (not shapes) reads no mark.
func TestMarksAreBounded(t *testing.T) {
	lie := func(body string) Request {
		return Request{Method: "POST", Path: "/p", Headers: formCT, Body: []byte(body), RequestBytes: 1 << 30}
	}
	var pairs []string
	for i := 0; i < 50; i++ {
		pairs = append(pairs, fmt.Sprintf("f%d=*9999999*a", i))
	}
	r := lie(strings.Join(pairs, "&"))
	got := bodyValues(&r, true)
	total := 0
	for _, v := range got {
		total += v.full
	}
	if total > DefaultBodyLimit || len(got) != 50 || got[0].full != DefaultBodyLimit || got[1].full != 0 {
		t.Errorf("50 values claiming 9,999,999 bytes each read as %d bytes in all (the first %d)", total, got[0].full)
	}
	for _, v := range []string{"*12", "**abc", "*1a*b", "*12345678*ab", "*"} {
		r := lie("v=" + v)
		got := bodyValues(&r, true)
		if len(got) != 1 || got[0].first != v || got[0].whole {
			t.Errorf("malformed mark %q read as %+v", v, got)
		}
	}
	r = Request{Method: "POST", Path: "/p", Headers: formCT, Body: []byte("v=*5000*a"), RequestBytes: 9}
	if got := bodyValues(&r, true); len(got) != 1 || got[0].full != 9-2 {
		t.Errorf("a mark in a body that fit the prefix: %+v", got)
	}
	// Trained on values, a mark is a value's bytes.
	tr, err := NewTrainer(DefaultTrainConfig())
	if err != nil {
		t.Fatal(err)
	}
	r = lie("v=*5000*a")
	if d, _ := tr.readable(&r); string(d.Body) != "v=*5000*a" {
		t.Errorf("trained on values, a mark was read: %q", d.Body)
	}
}
