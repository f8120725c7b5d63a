package models

import (
	"strings"
	"testing"
)

// A shape keeps every byte's class and the length: what the transition and
// length models learn from a value, they learn from its shape.
func TestShapesKeepClassesAndLength(t *testing.T) {
	for _, v := range []string{"Go-http-client/1.1", "1' OR '1'='1 --", "<script>x</script>", "ünï\x00\x7f"} {
		s := ShapeValue(v)
		if len(s) != len(v) {
			t.Fatalf("%q: shape %q changed the length", v, s)
		}
		for i := range v {
			if ClassOf(v[i]) != ClassOf(s[i]) {
				t.Errorf("%q: byte %d class %d shaped to class %d", v, i, ClassOf(v[i]), ClassOf(s[i]))
			}
		}
	}
	var a, b paramScratch
	a.addQuery([]byte("q=a%27b+c&n=12"), false)
	b.addQuery([]byte(ShapeQuery("q=a%27b+c&n=12")), false)
	if a.n != 2 || b.n != 2 {
		t.Fatalf("params %d and %d", a.n, b.n)
	}
	for i := 0; i < 2; i++ {
		va, vb := a.params[i].value, b.params[i].value
		if string(a.params[i].name) != string(b.params[i].name) || len(va) != len(vb) {
			t.Fatalf("param %d: %q=%q vs %q=%q", i, a.params[i].name, va, b.params[i].name, vb)
		}
		for j := range va {
			if ClassOf(va[j]) != ClassOf(vb[j]) {
				t.Errorf("param %d byte %d: class changed", i, j)
			}
		}
	}
}

// The trainer reads a shipped body's shape as scoring reads the body: the
// same parameters, by name, with values of the same length and classes,
// whatever the content type says or does not say (a form sent without one
// is sniffed as a form on both sides; an escaped value is decoded on both).
func TestShapedBodyReadsAsTheBody(t *testing.T) {
	ct := func(v string) []Header { return []Header{{Name: "content-type", Value: v}} }
	for _, c := range []struct {
		name    string
		headers []Header
		body    string
	}{
		{"form", ct("application/x-www-form-urlencoded"), "q=shoes+red&n=12&x=%27a%20b"},
		{"form without a content type", nil, "q=shoes+red&n=12&x=%27a%20b"},
		{"json", ct("application/json"), `{"a":"b%22c","n":1}`},
		{"text without a content type", nil, "hello world %41%42 + more"},
		{"multipart", ct("multipart/form-data; boundary=x"), "--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n%41\r\n--x--"},
		{"form of a payload without a content type", nil, "user=x&pass=%27+OR+%271%27%3D%271"},
		{"json of 3 KiB", ct("application/json"), `{"notes":"` + strings.Repeat("some words %22 ", 200) + `"}`},
	} {
		r := Request{Method: "POST", Path: "/p", Headers: c.headers, Body: []byte(c.body)}
		shaped := ShapeRequest(&r)
		var a, b paramScratch
		a.extract(&r)
		b.extract(AsRead(&shaped))
		if a.n != b.n {
			t.Errorf("%s: %d parameters read, %d from the shape %q", c.name, a.n, b.n, shaped.Body)
			continue
		}
		for i := 0; i < a.n; i++ {
			pa, pb := &a.params[i], &b.params[i]
			if string(pa.name) != string(pb.name) {
				t.Errorf("%s: parameter %d named %q, %q from the shape", c.name, i, pa.name, pb.name)
				continue
			}
			if len(pa.value) != len(pb.value) {
				t.Errorf("%s: %s is %q, from the shape %q", c.name, pa.name, pa.value, pb.value)
				continue
			}
			for j := range pa.value {
				if ClassOf(pa.value[j]) != ClassOf(pb.value[j]) {
					t.Errorf("%s: %s byte %d: class %d, from the shape %d", c.name, pa.name, j, ClassOf(pa.value[j]), ClassOf(pb.value[j]))
				}
			}
		}
	}
}

// A record carries the whole pairs of a query within MaxRecordedQuery
// bytes: a query read past it (max_header_bytes raised) is cut between
// pairs, never inside a value, and its shape stays within the collector's
// bound however many symbols it holds.
func TestRecordedQueryKeepsWholePairs(t *testing.T) {
	long := strings.Repeat("'", MaxRecordedQuery)
	for _, c := range []struct {
		name, q, want string
		cut           bool
	}{
		{"short", "a=1&b=2", "a=1&b=2", false},
		{"at the bound", "a=" + long[:MaxRecordedQuery-2], "a=" + long[:MaxRecordedQuery-2], false},
		{"past it", "a=" + long[:40<<10] + "&b=" + long, "a=" + long[:40<<10], true},
		{"a pair that ends at it", "a=" + long[:MaxRecordedQuery-2] + "&b=1", "a=" + long[:MaxRecordedQuery-2], true},
		{"one pair past it", "a=" + long + long, "", true},
	} {
		got, cut := RecordedQuery(c.q)
		if got != c.want || cut != c.cut {
			t.Errorf("%s: %d bytes recorded (cut %v), want %d (cut %v)", c.name, len(got), cut, len(c.want), c.cut)
		}
	}
	r := Request{Method: "GET", Path: "/s", Query: strings.Repeat("q="+strings.Repeat("'", 500)+"&", 2000)}
	if s := ShapeRequest(&r); len(s.Query) > MaxShippedQuery || len(s.Query) < 3*(MaxRecordedQuery-600) {
		t.Errorf("the record of a 1 MiB query of symbols: %d bytes, bound %d", len(s.Query), MaxShippedQuery)
	}
}
