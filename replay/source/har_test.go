package source

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const harFixture = `{
  "log": {
    "version": "1.2",
    "creator": {"name": "test", "version": "1", "nested": [{"a": [1, {"b": 2}]}]},
    "pages": [{"id": "page_1", "title": "x"}],
    "entries": [
      {
        "startedDateTime": "2024-03-01T10:00:00.123+01:00",
        "time": 12.5,
        "request": {
          "method": "GET", "url": "https://shop.example:8443/api/items?id=7&q=a%20b#top", "httpVersion": "HTTP/2",
          "headers": [
            {"name": ":method", "value": "GET"},
            {"name": ":authority", "value": "shop.example:8443"},
            {"name": ":path", "value": "/api/items?id=7"},
            {"name": ":scheme", "value": "https"},
            {"name": "User-Agent", "value": "ua"}
          ],
          "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0
        },
        "response": {"status": 200, "content": {"size": 321, "mimeType": "application/json"}, "bodySize": 100},
        "serverIPAddress": "[2001:db8::1]",
        "timings": {"send": 0, "wait": 10, "receive": 2.5}
      },
      {"startedDateTime": "2024-03-01T10:00:01Z", "request": {"method": "POST"}, "response": {"status": 200}},
      {
        "startedDateTime": "2024-03-01T10:00:02Z", "time": -1,
        "request": {
          "method": "POST", "url": "http://api.internal/login",
          "headers": [{"name": "Host", "value": "api.internal"}, {"name": ":authority", "value": "ignored"}, {"name": "Content-Type", "value": "application/x-www-form-urlencoded"}],
          "postData": {"mimeType": "application/x-www-form-urlencoded", "text": "user=a&pw=b"},
          "bodySize": 11
        },
        "response": {"status": 302, "bodySize": 0, "content": {"size": -1}}
      },
      {"request": {"method": 7, "url": "http://x/"}},
      {"startedDateTime": "last tuesday", "request": {"method": "GET", "url": "http://x/"}},
      {
        "startedDateTime": "2024-03-01T10:00:03.5Z",
        "request": {"method": "PUT", "url": "http://api.internal/form", "headers": [],
          "postData": {"mimeType": "application/x-www-form-urlencoded", "params": [{"name": "a b", "value": "c&d"}]}},
        "response": {"status": 201, "bodySize": 44}
      }
    ],
    "comment": "after the entries"
  }
}`

func readAllHAR(t testing.TB, in []byte) ([]*Record, []Problem, error) {
	t.Helper()
	var recs []*Record
	var bad []Problem
	err := ReadHAR(bytes.NewReader(in), "f.har", Overrides{Src: "browser"}, func(r *Record) error { recs = append(recs, r); return nil }, func(p Problem) { bad = append(bad, p) })
	return recs, bad, err
}

func TestReadHAR(t *testing.T) {
	for _, in := range map[string][]byte{"plain": []byte(harFixture), "gzip": gz([]byte(harFixture))} {
		recs, bad, err := readAllHAR(t, in)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 3 {
			t.Fatalf("read %d records, want 3; problems %v", len(recs), bad)
		}
		r0 := recs[0]
		q := r0.Request
		if r0.Pos != "f.har:entry 1" || q.Method != "GET" || q.Path != "/api/items" || q.Query != "id=7&q=a%20b" || q.Status != 200 || q.ResponseBytes != 321 {
			t.Errorf("entry 1: %+v", r0)
		}
		if q.Destination != "2001:db8::1" || q.Source != "browser" || q.Duration != 12500*time.Microsecond {
			t.Errorf("entry 1 identity/duration: %q %q %v", q.Source, q.Destination, q.Duration)
		}
		if !r0.TS.Equal(time.Date(2024, 3, 1, 9, 0, 0, 123e6, time.UTC)) {
			t.Errorf("entry 1 ts %v", r0.TS)
		}
		if len(q.Headers) != 2 || q.Headers[0].Name != "host" || q.Headers[0].Value != "shop.example:8443" || q.Headers[1].Name != "user-agent" {
			t.Errorf("entry 1 headers %+v (pseudo-headers dropped, :authority kept as host)", q.Headers)
		}
		r1 := recs[1]
		q = r1.Request
		if r1.Pos != "f.har:entry 3" || string(q.Body) != "user=a&pw=b" || q.RequestBytes != 11 || q.Status != 302 || q.ResponseBytes != 0 || q.Duration != 0 || q.Destination != "" {
			t.Errorf("entry 3: %+v", r1)
		}
		if len(q.Headers) != 2 || q.Headers[0] != (struct{ Name, Value string }{"host", "api.internal"}) {
			t.Errorf("entry 3 headers %+v (host present: :authority dropped)", q.Headers)
		}
		r2 := recs[2]
		if r2.Pos != "f.har:entry 6" || string(r2.Request.Body) != "a+b=c%26d" || r2.Request.ResponseBytes != 44 {
			t.Errorf("entry 6: %+v", r2)
		}
		want := map[string]string{"f.har:entry 2": "request.url: required", "f.har:entry 4": "not a HAR entry", "f.har:entry 5": "startedDateTime"}
		if len(bad) != len(want) {
			t.Fatalf("problems %v", bad)
		}
		for _, p := range bad {
			if w, ok := want[p.Pos]; !ok || !strings.Contains(p.Error(), w) {
				t.Errorf("problem %v, want %q", p, w)
			}
		}
	}
}

func TestReadHARBroken(t *testing.T) {
	// Truncated in the middle of the third entry: the first two are read.
	cut := strings.Index(harFixture, `"method": "POST", "url": "http://api.internal/login"`)
	if cut < 0 {
		t.Fatal("the fixture lost its third entry")
	}
	in := harFixture[:cut]
	recs, bad, err := readAllHAR(t, []byte(in))
	if err == nil || !strings.Contains(err.Error(), "f.har:entry 3") {
		t.Errorf("err %v, want one at entry 3", err)
	}
	if len(recs) != 1 || len(bad) != 1 {
		t.Errorf("records %d problems %v", len(recs), bad)
	}
	for _, s := range []string{`[]`, `{"log": {"version": "1.2"}}`, `{"log": {"entries": {}}}`, ``} {
		if _, _, err := readAllHAR(t, []byte(s)); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
	if recs, _, err := readAllHAR(t, []byte(`{"log": {"entries": []}}`)); err != nil || len(recs) != 0 {
		t.Errorf("empty HAR: %v %v", recs, err)
	}
}

func FuzzReadHAR(f *testing.F) {
	f.Add([]byte(harFixture))
	f.Add([]byte(`{"log":{"entries":[{"request":{"method":"GET","url":"http://a/b?c"}}]}}`))
	f.Add([]byte(`{"log":{"entries":[1,"x",null,{"request":null}]}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		_ = ReadHAR(bytes.NewReader(in), "f", Overrides{}, func(r *Record) error {
			if r.Request.Method == "" || !strings.HasPrefix(r.Request.Path, "/") || len(r.Request.Body) > 4096 {
				t.Fatalf("bad record %+v", r)
			}
			return nil
		}, func(Problem) {})
	})
}

// TestReadHAREntryLimit: an entry over the limit is reported and skipped
// without being held; the entries after it are read.
func TestReadHAREntryLimit(t *testing.T) {
	huge := `{"request": {"method": "POST", "url": "http://a/big", "postData": {"text": "` + strings.Repeat("A", 4096) + `\"x"}}}`
	in := `{"log": {"creator": {"name": "` + strings.Repeat("c", 5000) + `"}, "entries": [
		{"request": {"method": "GET", "url": "http://a/first"}},
		` + huge + `,
		{"request": {"method": "GET", "url": "http://a/third", "headers": [{"name": "x", "value": "]}\"{["}]}}
	], "after": 1}}`
	var hits atomic.Int64
	var paths []string
	var bad []Problem
	err := ReadHARWith(strings.NewReader(in), "f.har", Overrides{}, Limits{MaxEntryBytes: 1024, Hits: &hits}, func(r *Record) error {
		paths = append(paths, r.Request.Path)
		return nil
	}, func(p Problem) { bad = append(bad, p) })
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(paths, " ") != "/first /third" || len(bad) != 1 || bad[0].Pos != "f.har:entry 2" || hits.Load() != 1 {
		t.Errorf("read %v, problems %v, hits %d; want entry 2 skipped for its size", paths, bad, hits.Load())
	}
	// Under the default limit the same entry is read.
	paths = nil
	if err := ReadHAR(strings.NewReader(in), "f.har", Overrides{}, func(r *Record) error {
		paths = append(paths, r.Request.Path)
		return nil
	}, func(p Problem) { t.Error(p) }); err != nil || len(paths) != 3 {
		t.Errorf("default limit: %v %v", paths, err)
	}
}
