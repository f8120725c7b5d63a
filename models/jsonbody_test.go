package models

import (
	"math/rand/v2"
	"strings"
	"testing"
)

var jsonHeaders = []Header{{Name: "content-type", Value: "application/json"}}

func TestJSONFieldsForm(t *testing.T) {
	longKey := strings.Repeat("k", 200)
	for _, c := range []struct{ name, in, want string }{
		{"nested", `{"user":{"name":"ann","roles":["a","b"]},"items":[{"id":7}]}`,
			`$.user.name=ann&$.user.roles[]=a&$.user.roles[]=b&$.items[].id=7`},
		{"scalars", ` { "n" : -1.5e3 , "t":true,"z":null } `, `$.n=-1.5e3&$.t=true&$.z=null`},
		{"escapes", `{"q":"a\"b\\c\/\u0027d\u00e9\u20ac\n"}`, "$.q=a\"b\\c/'d\u00e9\u20ac\n"},
		{"the form's own bytes", `{"a&b=c":"1%2+3&x=y"}`, `$.a%26b%3Dc=1%2%2B3%26x%3Dy`},
		{"%-escapes, decoded as a body's", `{"q":"%27%20or%201%3D1"}`, `$.q=%27%20or%201%3D1`},
		{"empty containers and strings", `{"a":{},"b":[],"c":"","d":[[]]}`, `$.c=`},
		{"arrays of arrays", `[[1,2],[3]]`, `$[][]=1&$[][]=2&$[][]=3`},
		{"a root scalar", `"x"`, `$=x`},
		{"JSON lines", "{\"a\":1}\n{\"b\":2}\n", `$.a=1&$.b=2`},
		{"not escapes", `{"a":"\x\u12G\u"}`, `$.a=\x\u12G\u`},
		{"a trailing comma", `{"a":[1,],"b":2,}`, `$.a[]=1&$.b=2`},
		{"an exponent's sign", `{"n":1e+5}`, `$.n=1e%2B5`},
		{"a payload sent as JSON", `select * from users where 1=1`, `(body)=select * from users where 1%3D1`},
		{"an escaped payload sent as JSON", `%27%20or%201=1`, `(body)=%27%20or%201%3D1`},
		{"a bare word in an object", `{"a":1,"b":nope x}`, `$.a=1&$.b=n&(body)=ope x}`},
		{"broken after a value", `{"a":1 x":2}`, `$.a=1&(body)=x":2}`},
		{"an unquoted key", `{a:1}`, `(body)=a:1}`},
		{"a missing colon", `{"a" 1}`, `(body)=1}`},
		{"a stray closing bracket", `{"a":1]}`, `$.a=1&(body)=]}`},
		{"a key past the name's bound", `{"` + longKey + `":{"b":1},"c":2}`, "$." + longKey[:maxNameBytes-2] + `=1&$.c=2`},
		{"nesting past the bound", strings.Repeat(`[`, maxJSONDepth) + `1` + strings.Repeat(`]`, maxJSONDepth) + `{"a":` + strings.Repeat(`[`, maxJSONDepth) + `2`,
			"$" + strings.Repeat(`[]`, maxJSONDepth) + `=1&(body)=[2`},
	} {
		if got := string(AppendJSONFields(nil, []byte(c.in))); got != c.want {
			t.Errorf("%s: %q reads as\n%q, want\n%q", c.name, c.in, got, c.want)
		}
	}
}

// Read in chunks of any size, into outputs of any size, a JSON body
// makes the same form: an escape, a key or a value split between chunks
// reads as whole.
func TestJSONFieldsInAnyChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	bodies := []string{
		`{"user":{"name":"ann \"the\" \u00e9 & co","roles":["a","b=c"]},"n":12.5,"ok":true,"deep":[[{"x":"\u12"}]]}`,
		`{"a":"` + strings.Repeat(`x\ny%`, 2000) + `"} {"b":1`,
		`{"k":` + strings.Repeat(`[`, maxJSONDepth+3) + `"after"`,
		`{"notes":"cut in an escape \u00`,
		`{"` + strings.Repeat("k", 120) + `":[` + strings.Repeat("1,", 3000) + `1],"after":"x"}`,
	}
	for _, b := range bodies {
		want := string(AppendJSONFields(nil, []byte(b)))
		for round := 0; round < 50; round++ {
			var j JSONFields
			j.Reset()
			var got []byte
			buf := make([]byte, 0, jsonReserve+rng.IntN(64))
			rest := []byte(b)
			for len(rest) > 0 {
				chunk := rest[:min(len(rest), 1+rng.IntN(7))]
				rest = rest[len(chunk):]
				for len(chunk) > 0 {
					out, n := j.Feed(buf[:0], chunk)
					if n == 0 && len(out) == 0 {
						t.Fatalf("%.40q: Feed made no progress", b)
					}
					got = append(got, out...)
					chunk = chunk[n:]
				}
			}
			got = j.End(got)
			if string(got) != want {
				t.Fatalf("%.40q, round %d: in chunks\n%.200q\nat once\n%.200q", b, round, got, want)
			}
		}
	}
}

// Abuse: every scalar repeats its whole path, so an array of numbers under
// a long path would make every other byte of a body a parameter with a
// name of 128 bytes. Past maxNameAmplification bytes of names per byte of
// the body (and its first 4 KiB), the rest is one value: read, and a name
// the route never had.
func TestJSONNamesAreBoundedByTheBody(t *testing.T) {
	key := strings.Repeat("k", 120)
	body := `{"` + key + `":[` + strings.Repeat("1,", 32000) + `1]}`
	form := string(AppendJSONFields(nil, []byte(body)))
	names, fields := 0, strings.Split(form, "&")
	for _, f := range fields {
		names += strings.IndexByte(f, '=')
	}
	last := fields[len(fields)-1]
	if names > maxNameAmplification*len(body)+MaxBodyPrefix || !strings.HasPrefix(last, bodyParam+"=") || len(last) < len(body)/2 {
		t.Errorf("%d fields, %d bytes of names for a body of %d; the last %.40q…", len(fields), names, len(body), last)
	}
	// A body of many fields with short paths is read whole.
	short := `{"items":[` + strings.Repeat(`{"id":1,"n":2},`, 2000) + `{"id":3}]}`
	if f := string(AppendJSONFields(nil, []byte(short))); strings.Contains(f, bodyParam) || strings.Count(f, "&") != 4000 {
		t.Errorf("a body of 4,001 short fields read as %d fields (broken: %v)", strings.Count(f, "&")+1, strings.Contains(f, bodyParam))
	}
}

func TestIsJSON(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json": true, "application/json; charset=utf-8": true, "Application/JSON": true,
		"application/vnd.api+json": true, "application/problem+json;x=1": true, "text/json": true,
		"application/jsonp": false, "application/x-json-stream": false, "application/x-www-form-urlencoded": false,
		"json": false, "": false, "application/notjson": false, "multipart/form-data": false,
	} {
		if IsJSON(ct) != want {
			t.Errorf("IsJSON(%q) = %v", ct, !want)
		}
	}
}

// Scoring reads a JSON body's fields as a form's: the same parameters, by
// name, with the same values, in one chunk or many.
func TestJSONBodyIsReadAsItsFields(t *testing.T) {
	body := `{"user":{"name":"o'neil","tags":["a","b"]},"q":"1' OR '1'='1","n":3,"e":"%3Cb%3E+1"}`
	form := `$.user.name=o%27neil&$.user.tags[]=a&$.user.tags[]=b&$.q=1%27+OR+%271%27%3D%271&$.n=3&$.e=%3Cb%3E%2B1`
	var j, f paramScratch
	j.extract(&Request{Method: "POST", Path: "/p", Headers: jsonHeaders, Body: []byte(body)})
	f.extract(&Request{Method: "POST", Path: "/p", Headers: formCT, Body: []byte(form)})
	params := func(s *paramScratch) (out []string) {
		for i := 0; i < s.n; i++ {
			if s.params[i].body {
				out = append(out, string(s.params[i].name)+"="+string(s.params[i].value))
			}
		}
		return out
	}
	got, want := params(&j), params(&f)
	if strings.Join(got, "\n") != strings.Join(want, "\n") || len(got) != 6 {
		t.Errorf("a JSON body read as\n%q\nits form as\n%q", got, want)
	}
	// A record's body, the form of the fields, reads the same.
	s := ShapeRequest(&Request{Method: "POST", Path: "/p", Headers: jsonHeaders, Body: []byte(body)})
	if s.FormBytes != int64(len(AppendJSONFields(nil, []byte(body)))) {
		t.Errorf("the record says FormBytes %d", s.FormBytes)
	}
	var r paramScratch
	r.extract(AsRead(&s))
	var names []string
	for _, p := range params(&r) {
		names = append(names, p[:strings.IndexByte(p, '=')])
	}
	if strings.Join(names, ",") != "$.user.name,$.user.tags[],$.user.tags[],$.q,$.n,$.e" {
		t.Errorf("the record's fields: %q", names)
	}
}

// A model trained on a JSON API's bodies judges its fields as it judges a
// form's: a renamed field is a new name, an injection in one field is that
// field's, and a body that stops being JSON meets a parameter the route
// never had. Trained offline or on the records filters ship alike.
func TestJSONFieldsAreParameters(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	colours := []string{"red", "green", "blue", "black"}
	order := func(qty int, colour, note string) string {
		return `{"item":{"sku":"SKU-` + string(rune('A'+qty%26)) + `1234","qty":` + strings.Repeat("1", 1+qty%2) +
			`,"colour":"` + colour + `"},"note":"` + note + `","gift":` + []string{"true", "false"}[qty%2] + `}`
	}
	words := []string{"please", "deliver", "after", "noon", "to", "the", "back", "door", "thanks", "ring", "twice"}
	note := func() string {
		n := 2 + rng.IntN(5)
		w := make([]string, n)
		for i := range w {
			w[i] = words[rng.IntN(len(words))]
		}
		return strings.Join(w, " ")
	}
	req := func(body string) Request {
		return Request{Method: "POST", Path: "/orders", Source: "web", Destination: "shop", Headers: jsonHeaders, Body: []byte(body)}
	}
	for _, shaped := range []bool{false, true} {
		cfg := DefaultTrainConfig()
		if shaped {
			cfg = ShapedTrainConfig()
		}
		tr, err := NewTrainer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3000; i++ {
			r := req(order(rng.IntN(50), colours[rng.IntN(len(colours))], note()))
			if shaped {
				r = ShapeRequest(&r)
			}
			tr.Observe(&r)
		}
		m, err := tr.Model()
		if err != nil {
			t.Fatal(err)
		}
		w := m.Workload("shop")
		if p := paramNamed(w, "$.item.colour"); p == nil {
			t.Fatalf("shaped %v: no model of $.item.colour", shaped)
		}
		if p := paramNamed(w, bodyParam); p != nil {
			t.Errorf("shaped %v: the body is a parameter of its own", shaped)
		}
		normal := req(order(7, "red", "please ring twice"))
		base := w.Score(&normal).Score
		threshold := m.Meta.Threshold
		for _, c := range []struct {
			name, body string
			reason     ReasonCode
		}{
			{"a renamed field", strings.Replace(order(7, "red", "please ring twice"), `"colour"`, `"color"`, 1), ReasonNewParam},
			{"an injection in one field", order(7, "red", `please' UNION SELECT password FROM users--`), ReasonKeywords},
			{"a body that stops being JSON", order(7, "red", "please ring twice") + `;{$where: sleep(1000)}`, ReasonNewParam},
		} {
			r := req(c.body)
			v := w.Score(&r)
			if v.Score <= threshold || !hasReason(v, c.reason) {
				t.Errorf("shaped %v: %s scores %.3f (normal %.3f, threshold %.3f), reasons %v", shaped, c.name, v.Score, base, threshold, v.ReasonList())
			}
		}
		if base > threshold {
			t.Errorf("shaped %v: a normal order scores %.3f, over the threshold %.3f", shaped, base, threshold)
		}
		// A policy reads the request again with its body as a filter
		// keeps it (the form of its fields): the value that decided is
		// the field's.
		r := req(order(7, "red", `please' UNION SELECT password FROM users--`))
		kept := r
		kept.Body = nil
		var tail BodyTail
		tail.Keep(&kept, r.Body, DefaultBodyLimit, false)
		if name, _, _, ok := w.ValueEvidence(&kept, new(Scratch)); !ok || string(name) != "$.note" {
			t.Errorf("shaped %v: the evidence of a kept body is %q (%v), want $.note", shaped, name, ok)
		}
	}
}

// Any body sent as JSON: read in chunks it makes the form it makes at
// once, and its record reads, to the trainer, as the body reads to
// scoring (the same values, by name, of the same lengths), within the
// collector's bounds.
func FuzzJSONFields(f *testing.F) {
	for _, s := range []string{`{"a":[1,{"b":"c\u00e9"}],"d":null}`, `{"a":"x%41&=+","b":tru}`, `[[[`, `{"a":1 x}`, `"\u12`, `{"k":"` + strings.Repeat("ab ", 2000) + `"}`} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, step uint8) {
		want := AppendJSONFields(nil, body)
		var j JSONFields
		j.Reset()
		buf := make([]byte, 0, jsonReserve)
		var got []byte
		n := int(step%16) + 1
		for rest := body; len(rest) > 0; {
			chunk := rest[:min(n, len(rest))]
			rest = rest[len(chunk):]
			for len(chunk) > 0 {
				out, k := j.Feed(buf[:0], chunk)
				got = append(got, out...)
				chunk = chunk[k:]
			}
		}
		if got = j.End(got); string(got) != string(want) {
			t.Fatalf("in chunks of %d\n%q\nat once\n%q", n, got, want)
		}
		r := Request{Method: "POST", Path: "/p", Headers: jsonHeaders, Body: body, RequestBytes: int64(len(body))}
		s := ShapeRequest(&r)
		if len(s.Body) > MaxShippedBody {
			t.Fatalf("a record's body of %d bytes", len(s.Body))
		}
		a, b := bodyValues(&r, false), bodyValues(&s, true)
		if len(a) != len(b) && len(s.Body) < MaxBodyPrefix {
			t.Fatalf("%d values, %d from the record", len(a), len(b))
		}
		for i := range min(len(a), len(b)) {
			if a[i].name != b[i].name || a[i].whole != b[i].whole || a[i].whole && a[i].full != b[i].full {
				t.Fatalf("value %d: %s of %d (whole %v), from the record %s of %d (whole %v); record body %.300q", i, a[i].name, a[i].full, a[i].whole, b[i].name, b[i].full, b[i].whole, s.Body)
			}
		}
	})
}
