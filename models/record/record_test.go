package record

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/models"
)

// write writes a record of every field the appenders know.
func write(b []byte, ts int64, v *Version, sampled bool) []byte {
	b = AppendHead(b, ts, "/reviews/{num}", 0.98765, true, v, sampled)
	b = AppendRequest(b, "POST", "/reviews/{num}", "q=a%20a", "spiffe://cluster.local/ns/shop/sa/frontend", "reviews.shop",
		503, 8, 42, []byte(models.ShapeValue("secret=1")), 0x5eed, true, 9)
	b = AppendHeader(b, true, "content-type", "application/x-www-form-urlencoded")
	b = AppendHeader(b, false, "user-agent", "Aa-aaaa/0.0")
	b = AppendEnd(b)
	v2 := models.Verdict{NReason: 1}
	v2.Reasons[0] = models.Reason{Code: models.ReasonKeywords, Surprise: 5}
	return AppendDecision(b, &v2, &Decision{Deny: models.ReasonKeywords, WouldDeny: models.ReasonKeywords, Enforced: true,
		Excepted: []string{"exc-1"}, Param: "lang", Shape: "a'", HaveParam: true})
}

// notShipped are the fields of Record and models.Request no filter writes:
// the receiver's time, the RFC 3339 time (the filter sends ts_ns, which
// Normalize moves there), the request's duration, and whether it is read
// as a record (unexported: the control plane's reading, models.AsRead).
var notShipped = map[string]bool{"Received": true, "Duration": true, "marked": true}

// TestAppendedRecordDecodes: what the appenders write decodes into Record
// with every value in place, and every field of Record and of its request
// is written or listed in notShipped, so the writer and the type cannot
// drift apart: a field added to either fails here until the appenders
// write it.
func TestAppendedRecordDecodes(t *testing.T) {
	ts := time.Date(2025, 3, 1, 12, 0, 0, 123, time.UTC)
	v := NewVersion(strings.Repeat("ab", 32), 0.25)
	line := write(nil, ts.UnixNano(), &v, true)
	var got Record
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	got.Normalize()
	want := Record{TS: ts, TSUnixNano: ts.UnixNano(), Route: "/reviews/{num}", Score: 0.9877, Flagged: true,
		ModelSHA256: strings.Repeat("ab", 32), SampleRate: 0.25,
		Request: models.Request{Method: "POST", Path: "/reviews/{num}", Query: "q=a%20a", Source: "spiffe://cluster.local/ns/shop/sa/frontend",
			Destination: "reviews.shop", Status: 503, RequestBytes: 8, ResponseBytes: 42, Body: []byte(models.ShapeValue("secret=1")), ValueKeyID: 0x5eed, KeywordMarks: true, FormBytes: 9,
			Headers: []models.Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}, {Name: "user-agent", Value: "Aa-aaaa/0.0"}}},
		Reasons: []string{"keywords"}, Deny: "keywords", Enforced: true, WouldDeny: "keywords", Excepted: []string{"exc-1"}, DenyParam: "lang", DenyShape: "a'"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v\nfrom %s", got, want, line)
	}
	for _, x := range []any{got, got.Request, got.Request.Headers[0]} {
		rv := reflect.ValueOf(x)
		for i := 0; i < rv.NumField(); i++ {
			if f := rv.Type().Field(i); rv.Field(i).IsZero() && !notShipped[f.Name] {
				t.Errorf("%s.%s is not written by the appenders (write it, or list it in notShipped)", rv.Type().Name(), f.Name)
			}
		}
	}
}

// A record written whole (not sampled), or without a version, carries no
// sample rate and stands for itself; an empty body is left out.
func TestUnsampledRecordStandsForItself(t *testing.T) {
	v := NewVersion("", 0.05)
	for _, v := range []*Version{&v, nil} {
		b := AppendHead(nil, 1, "/", 0, false, v, false)
		b = AppendEnd(AppendRequest(b, "GET", "/", "", "a", "b", 0, 0, 0, nil, 0, false, 0))
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if r.SampleRate != 0 || r.Weight() != 1 || r.ModelSHA256 != "" || strings.Contains(string(b), "Body") {
			t.Errorf("%s: rate %v, weight %v, model %q", b, r.SampleRate, r.Weight(), r.ModelSHA256)
		}
	}
	if all := NewVersion("", 1); all.Len() != 0 {
		t.Errorf("every request shipped: a version of %d bytes", all.Len())
	}
}

// Hostile values (invalid UTF-8, control bytes, quotes, backslashes) still
// make one valid JSON line, and a byte that is not UTF-8 stays a high byte.
func TestHostileValuesStayValidJSON(t *testing.T) {
	for _, s := range []string{"\xff", "a\x00b", `"\`, "\x7f", "ü\xc3", "\xed\xa0\x80", "line\nbreak\u2028"} {
		b := AppendHead(nil, 1, s, 0.5, false, nil, false)
		b = AppendRequest(b, s, s, s, s, s, 200, 1, 1, []byte(s), 0, true, 1)
		b = AppendEnd(AppendHeader(b, true, s, s))
		if !json.Valid(b) {
			t.Errorf("%q: invalid JSON %q", s, b)
			continue
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		if r.Request.Method == "" || string(r.Request.Body) != s || r.Request.Headers[0].Value == "" {
			t.Errorf("%q: decoded %+v", s, r)
		}
		if s == "\xff" && r.Route != "\u00ff" {
			t.Errorf("a byte that is not UTF-8: route %q, want U+00FF", r.Route)
		}
	}
}

// Scores are written with four decimals, clamped to [0,1].
func TestScoreFourDecimals(t *testing.T) {
	for x, want := range map[float64]string{0: "0.0000", 0.00004: "0.0000", 0.00005: "0.0001", 0.5: "0.5000", 0.99996: "1.0000", 1: "1.0000", 7: "1.0000", -1: "0.0000"} {
		if got := string(appendFixed4(nil, x)); got != want {
			t.Errorf("%v: %q, want %q", x, got, want)
		}
	}
}

// The appenders allocate nothing when the buffer has room: the filter
// allocates a record once.
func TestAppendersDoNotAllocate(t *testing.T) {
	v := NewVersion(strings.Repeat("7", 64), 0.05)
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = write(buf[:0], 1, &v, true) }); n != 0 {
		t.Errorf("%v allocations per record", n)
	}
}

func TestValidKey(t *testing.T) {
	for k, want := range map[string]bool{
		strings.Repeat("a", MinKeyLen): true, strings.Repeat("Z9._:-", 30)[:MaxKeyLen]: true,
		strings.Repeat("a", MinKeyLen-1): false, strings.Repeat("a", MaxKeyLen+1): false,
		"0123456789abcdef 0": false, "0123456789abcdef/0": false, "0123456789abcdefü": false, "": false,
	} {
		if ValidKey(k) != want {
			t.Errorf("ValidKey(%q) = %v", k, !want)
		}
	}
}

// A sampled record stands for 1/sample_rate requests; a flagged one, or one
// without a rate in (0,1), for itself.
func TestWeight(t *testing.T) {
	for _, c := range []struct {
		r    Record
		want float64
	}{{Record{SampleRate: 0.05}, 20}, {Record{SampleRate: 0.05, Flagged: true}, 1}, {Record{}, 1}, {Record{SampleRate: 1}, 1},
		{Record{SampleRate: -3}, 1}, {Record{SampleRate: MinSampleRate}, 1000}} {
		if got := c.r.Weight(); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%+v: weight %v, want %v", c.r, got, c.want)
		}
	}
}
