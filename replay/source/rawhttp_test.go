package source

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source/internal/http1"
)

// readAllRaw reads in with ReadRawHTTP and returns records and problems.
func readAllRaw(t testing.TB, in []byte, o Overrides) ([]*Record, []Problem) {
	t.Helper()
	var recs []*Record
	var bad []Problem
	err := ReadRawHTTP(bytes.NewReader(in), "r.txt", o, func(r *Record) error { recs = append(recs, r); return nil }, func(p Problem) { bad = append(bad, p) })
	if err != nil {
		t.Fatal(err)
	}
	return recs, bad
}

func TestReadRawHTTP(t *testing.T) {
	parts := []string{
		// 0: CSIC style, absolute URI with a fragment, LF line ends, a blank line after.
		"GET http://localhost:8080/tienda1/index.jsp?a=1&b=2#top HTTP/1.1\nUser-Agent: Mozilla/5.0\nHost: localhost:8080\n\n\n",
		// 1: POST with Content-Length, CRLF, pipelined straight after.
		"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nuser=a&pw=b",
		// 2: chunked, with an extension and a trailer.
		"POST /up HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
		// 3: garbage line: a problem, resync at the next request line.
		"this is not HTTP\r\nnor this\r\n",
		// 4: POST without Content-Length: body up to the next request line.
		"POST /nocl HTTP/1.0\nHost: y\n\nline1\nline2\n\n",
		// 5: bad header line in the middle of a request: reported, skipped.
		"GET /bad HTTP/1.1\nHost: z\nno colon here\n\n",
		// 6: obs-fold; pipelined with no blank line before the next request.
		"GET /fold?x HTTP/1.1\nX-Long: a\n  b\nGET /next HTTP/1.1\nHost: n\n\n",
		// 7: bad Content-Length: reported and passed over; the body is unframed.
		"POST /cl HTTP/1.1\nContent-Length: 1x\n\nabc\n",
		// 8: a scheme other than http(s): refused, as Envoy does.
		"GET ftp://h/file HTTP/1.1\nHost: h\n\n",
		// 9: the last request, headers ending at end of input.
		"DELETE HTTPS://h HTTP/1.1\nHost: h",
	}
	in := strings.Join(parts, "")
	offset := func(i int) string {
		return fmt.Sprintf("r.txt:offset %d", len(strings.Join(parts[:i], "")))
	}
	at := func(s string) string { return fmt.Sprintf("r.txt:offset %d", strings.Index(in, s)) }
	recs, bad := readAllRaw(t, []byte(in), Overrides{Label: "normal", Dst: "shop"})
	type want struct {
		pos, method, path, query, body string
		nh                             int
	}
	wants := []want{
		{offset(0), "GET", "/tienda1/index.jsp", "a=1&b=2", "", 2},
		{offset(1), "POST", "/login", "", "user=a&pw=b", 3},
		{offset(2), "POST", "/up", "", "hello, world", 1},
		{offset(4), "POST", "/nocl", "", "line1\nline2", 1},
		{offset(5), "GET", "/bad", "", "", 1},
		{offset(6), "GET", "/fold", "x", "", 1},
		{at("GET /next"), "GET", "/next", "", "", 1},
		{offset(7), "POST", "/cl", "", "abc", 1},
		{offset(9), "DELETE", "/", "", "", 1},
	}
	if len(recs) != len(wants) {
		for _, r := range recs {
			t.Logf("%s %s %s %q", r.Pos, r.Request.Method, r.Request.Path, r.Request.Body)
		}
		t.Fatalf("read %d records, want %d; problems %v", len(recs), len(wants), bad)
	}
	for i, w := range wants {
		r := recs[i]
		q := r.Request
		if r.Pos != w.pos || q.Method != w.method || q.Path != w.path || q.Query != w.query || string(q.Body) != w.body || len(q.Headers) != w.nh {
			t.Errorf("record %d: %s %s %s ?%s body %q headers %v; want %+v", i, r.Pos, q.Method, q.Path, q.Query, q.Body, q.Headers, w)
		}
		if r.Label != "normal" || q.Destination != "shop" {
			t.Errorf("record %d: overrides not applied: %+v", i, r)
		}
		if q.RequestBytes != int64(len(w.body)) {
			t.Errorf("record %d: RequestBytes %d, want %d", i, q.RequestBytes, len(w.body))
		}
	}
	if v, _ := recs[5].Request.Header("x-long"); v != "a b" {
		t.Errorf("folded header %q", v)
	}
	if v, _ := recs[0].Request.Header("user-agent"); v != "Mozilla/5.0" {
		t.Errorf("user-agent %q", v)
	}
	wantBad := []struct {
		pos string
		err error
		msg string
	}{
		{offset(3), http1.ErrStartLine, "this is not HTTP"},
		{at("no colon"), http1.ErrHeader, "no colon here"},
		{offset(7), http1.ErrFraming, "Content-Length"},
		{offset(8), http1.ErrStartLine, `scheme "ftp"`},
	}
	if len(bad) != len(wantBad) {
		t.Fatalf("problems %v, want %d", bad, len(wantBad))
	}
	for i, w := range wantBad {
		if bad[i].Pos != w.pos || !errors.Is(bad[i].Err, w.err) || !strings.Contains(bad[i].Err.Error(), w.msg) {
			t.Errorf("problem %d: %v, want %s: %v (%s)", i, bad[i], w.pos, w.err, w.msg)
		}
	}
}

func TestReadRawHTTPGzipAndLimits(t *testing.T) {
	big := strings.Repeat("x", 70000)
	in := "\xef\xbb\xbfPUT /big HTTP/1.1\r\nContent-Length: 70000\r\n\r\n" + big +
		"POST /big2 HTTP/1.1\n\n" + big + "\n\n" +
		"POST /trunc HTTP/1.1\nContent-Length: 100\n\nshort"
	recs, bad := readAllRaw(t, gz([]byte(in)), Overrides{})
	if len(recs) != 3 || len(bad) != 1 {
		t.Fatalf("records %d problems %v", len(recs), bad)
	}
	if recs[0].Pos != "r.txt:offset 3" || recs[0].Request.Method != "PUT" {
		t.Errorf("the byte order mark is not skipped: %s %s", recs[0].Pos, recs[0].Request.Method)
	}
	for _, r := range recs[:2] {
		// Kept as far as the filter reads (models.DefaultBodyLimit).
		if len(r.Request.Body) != models.DefaultBodyLimit || r.Request.RequestBytes != 70000 {
			t.Errorf("%s: body %d bytes, RequestBytes %d", r.Pos, len(r.Request.Body), r.Request.RequestBytes)
		}
	}
	// A body cut short is kept as far as it goes, and reported.
	if q := recs[2].Request; string(q.Body) != "short" || q.RequestBytes != 5 {
		t.Errorf("truncated body %q (%d bytes)", q.Body, q.RequestBytes)
	}
	if !errors.Is(bad[0].Err, http1.ErrTruncated) || bad[0].Pos != fmt.Sprintf("r.txt:offset %d", strings.Index(in, "POST /trunc")) {
		t.Errorf("problem %v", bad[0])
	}
}

func TestReadRawHTTPChunkedErrors(t *testing.T) {
	in := "POST /a HTTP/1.1\nTransfer-Encoding: chunked\n\nzz\nbody\n" +
		"POST /b HTTP/1.1\nTransfer-Encoding: chunked\n\n3\nabcdef\n0\n\n" +
		"POST /c HTTP/1.1\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n"
	recs, bad := readAllRaw(t, []byte(in), Overrides{})
	var got []string
	for _, r := range recs {
		got = append(got, r.Request.Path+"="+string(r.Request.Body))
	}
	// The requests are kept with the body read before the framing broke;
	// the rest, up to the next request line, is skipped.
	if strings.Join(got, " ") != "/a= /b=abc /c=abc" {
		t.Errorf("records %q", got)
	}
	if len(bad) != 2 || !strings.Contains(bad[0].Err.Error(), "chunk size") || !strings.Contains(bad[1].Err.Error(), "line end") ||
		!errors.Is(bad[0].Err, http1.ErrFraming) || !errors.Is(bad[1].Err, http1.ErrFraming) {
		t.Errorf("problems %v", bad)
	}
}

func TestReadRawHTTPEmitError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := ReadRawHTTP(strings.NewReader("GET / HTTP/1.1\n\nGET /2 HTTP/1.1\n\n"), "r", Overrides{}, func(*Record) error { n++; return stop }, func(Problem) {})
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("err %v after %d records", err, n)
	}
}

func rawBenchInput(n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, "GET http://localhost:8080/tienda1/publico/anadir.jsp?id=%d&nombre=Jam%%F3n+Ib%%E9rico&precio=85&cantidad=%d HTTP/1.1\r\nUser-Agent: Mozilla/5.0 (compatible; Konqueror/3.5; Linux) KHTML/3.5.8 (like Gecko)\r\nPragma: no-cache\r\nCache-control: no-cache\r\nAccept: text/xml,application/xml,application/xhtml+xml,text/html;q=0.9\r\nAccept-Encoding: x-gzip, x-deflate, gzip, deflate\r\nAccept-Charset: utf-8, utf-8;q=0.5, *;q=0.5\r\nAccept-Language: en\r\nHost: localhost:8080\r\nCookie: JSESSIONID=933185092E0B668B90676E83489A8A5D\r\nConnection: close\r\n\r\n\r\n", i, i%7)
		case 1:
			body := fmt.Sprintf("modo=entrar&login=user%d&pwd=secreto&remember=on&B1=Entrar", i)
			fmt.Fprintf(&b, "POST http://localhost:8080/tienda1/publico/autenticar.jsp HTTP/1.1\r\nUser-Agent: Mozilla/5.0 (compatible; Konqueror/3.5; Linux) KHTML/3.5.8 (like Gecko)\r\nPragma: no-cache\r\nAccept: text/xml,application/xml\r\nHost: localhost:8080\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s\r\n\r\n", len(body), body)
		default:
			fmt.Fprintf(&b, "POST /api/v1/orders HTTP/1.1\nHost: orders\nContent-Type: application/json\n\n{\"id\":%d,\"items\":[1,2,3]}\n\n", i)
		}
	}
	return b.Bytes()
}

// BenchmarkReadRawHTTP reads 10,000 in-memory requests per iteration.
func BenchmarkReadRawHTTP(b *testing.B) {
	const n = 10000
	in := rawBenchInput(n)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		got := 0
		err := ReadRawHTTP(bytes.NewReader(in), "bench", Overrides{}, func(*Record) error { got++; return nil }, func(p Problem) { b.Fatal(p) })
		if err != nil || got != n {
			b.Fatalf("%d records, err %v", got, err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

func FuzzReadRawHTTP(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST /x HTTP/1.1\nContent-Length: 3\n\nabcGET /y HTTP/1.0\n\n"))
	f.Add([]byte("POST /x HTTP/1.1\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n"))
	f.Add([]byte("junk\n\nPOST http://h/p?q HTTP/1.1\n\nbody\n\nGET / HTTP/1.1\n"))
	f.Add(rawBenchInput(3))
	f.Fuzz(func(t *testing.T, in []byte) {
		gz := bytes.HasPrefix(in, gzipMagic) // offsets are in the decompressed stream; errors allowed
		var last int64 = -1
		err := ReadRawHTTP(bytes.NewReader(in), "f", Overrides{}, func(r *Record) error {
			var off int64
			if _, err := fmt.Sscanf(r.Pos, "f:offset %d", &off); err != nil || off <= last || !gz && off >= int64(len(in)) {
				t.Fatalf("bad position %q after %d", r.Pos, last)
			}
			last = off
			if r.Request.Method == "" || len(r.Request.Body) > 4096 {
				t.Fatalf("bad record %+v", r)
			}
			return nil
		}, func(Problem) {})
		if err != nil && !gz {
			t.Fatal(err)
		}
	})
}
