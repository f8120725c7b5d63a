package http1

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/meshward/meshward/models"
)

// readAll reads every request (or response, to GET) of in, through both
// inputs a Reader takes: they must agree.
func readAll(t testing.TB, in string, response bool) ([]*Message, []Problem) {
	t.Helper()
	var out [2][]*Message
	var probs [2][]Problem
	for i := range out {
		collect := func(p Problem) { probs[i] = append(probs[i], p) }
		r := NewBytesReader([]byte(in), 0, collect)
		if i == 1 {
			r = NewReader(strings.NewReader(in), 0, collect)
		}
		for {
			read := r.ReadRequest
			if response {
				read = func() (*Message, error) { return r.ReadResponse("GET") }
			}
			m, err := read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			out[i] = append(out[i], m)
		}
	}
	if fmt.Sprint(describe(out[0]), probs[0]) != fmt.Sprint(describe(out[1]), probs[1]) {
		t.Fatalf("bytes and stream disagree:\n%v %v\n%v %v", describe(out[0]), probs[0], describe(out[1]), probs[1])
	}
	return out[0], probs[0]
}

func describe(ms []*Message) []string {
	var s []string
	for _, m := range ms {
		s = append(s, fmt.Sprintf("@%d %s %s %s %d %v %q/%d", m.Off, m.Method, m.Target, m.Proto, m.Status, m.Headers, m.Body, m.BodyLen))
	}
	return s
}

func TestRequests(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     []string // "METHOD target body" per request
		problems []error
	}{
		{"pipelined", "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\n", []string{"GET /a ", "GET /b "}, nil},
		{"blank lines and LF", "\n\r\nGET /a HTTP/1.0\nHost: h\n\n\n\nGET /b HTTP/1.1\n\n", []string{"GET /a ", "GET /b "}, nil},
		{"content-length", "POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /n HTTP/1.1\r\n\r\n", []string{"POST /p abc", "GET /n "}, nil},
		{"leading zeros and an equal list", "POST /p HTTP/1.1\nContent-Length: 0003\nContent-Length: 3, 3\n\nabc", []string{"POST /p abc"}, nil},
		{"conflicting lengths: the first", "POST /p HTTP/1.1\nContent-Length: 2\nContent-Length: 5\n\nabGET /n HTTP/1.1\n\n", []string{"POST /p ab", "GET /n "}, []error{ErrFraming}},
		{"invalid length passed over", "POST /p HTTP/1.1\nContent-Length: +3\n\nabc\n", []string{"POST /p abc"}, []error{ErrFraming}},
		{"length too large", "POST /p HTTP/1.1\nContent-Length: 18446744073709551615\n\nGET /n HTTP/1.1\n\n", []string{"POST /p ", "GET /n "}, []error{ErrFraming}},
		{"chunked", "PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\n", []string{"PUT /c wikipedia"}, nil},
		{"chunked over content-length", "POST /c HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 50\n\n0\n\nGET /s HTTP/1.1\n\n", []string{"POST /c ", "GET /s "}, nil},
		{"chunked not last", "POST /c HTTP/1.1\nTransfer-Encoding: chunked, identity\n\n0\n\nGET /s HTTP/1.1\n\n", []string{"POST /c 0", "GET /s "}, []error{ErrFraming}},
		{"chunk size overflow", "POST /c HTTP/1.1\nTransfer-Encoding: chunked\n\n10000000000000000\n\nGET /s HTTP/1.1\n\n", []string{"POST /c ", "GET /s "}, []error{ErrFraming}},
		{"chunk without line end", "POST /c HTTP/1.1\nTransfer-Encoding: chunked\n\n3\nabcGET /s HTTP/1.1\n\n", []string{"POST /c abc", "GET /s "}, []error{ErrFraming}},
		{"chunked cut short", "POST /c HTTP/1.1\nTransfer-Encoding: chunked\n\n5\nab", []string{"POST /c ab"}, []error{ErrTruncated}},
		{"content-length cut short", "POST /c HTTP/1.1\nContent-Length: 9\n\nab", []string{"POST /c ab"}, []error{ErrTruncated}},
		{"unframed body", "POST /u HTTP/1.1\n\nline1\n\nline2\n\n\nGET /n HTTP/1.1\n\n", []string{"POST /u line1\n\nline2", "GET /n "}, nil},
		{"no unframed body for GET", "GET /g HTTP/1.1\n\ncruft\nGET /n HTTP/1.1\n\n", []string{"GET /g ", "GET /n "}, []error{ErrStartLine}},
		{"no unframed body after an upgrade", "POST /ws HTTP/1.1\nUpgrade: x\n\n\x81\x05hello", []string{"POST /ws "}, []error{ErrStartLine}},
		{"next request ends the head", "GET /a HTTP/1.1\nContent-Length: 3\nGET /b HTTP/1.1\n\n", []string{"GET /a ", "GET /b "}, nil},
		{"malformed start line skipped", "G\x01T /x HTTP/1.1\nHost: a\n\nGET /ok HTTP/1.1\n\n", []string{"GET /ok "}, []error{ErrStartLine}},
		{"no URI", "GET HTTP/1.1\n\nGET /ok HTTP/1.1\n\n", []string{"GET /ok "}, []error{ErrNoURI}},
		{"control byte in the target", "GET /a\x00b HTTP/1.1\n\nGET /ok HTTP/1.1\n\n", []string{"GET /ok "}, []error{ErrStartLine}},
		{"another scheme", "GET ftp://h/f HTTP/1.1\n\nGET http://h/ok HTTP/1.1\n\n", []string{"GET http://h/ok "}, []error{ErrStartLine}},
		{"white space kept", "GET  /a b\tHTTP/1.1\n\n", []string{"GET /a b "}, []error{ErrStartLine}},
		{"bad version kept", "GET /v HTTP/1.\n\n", []string{"GET /v "}, []error{ErrStartLine}},
		{"HTTP/0.9", "GET /old\r\n", []string{"GET /old "}, nil},
		{"HTTP/0.9 with headers", "GET /nov\r\nHost: x\r\n\r\n", []string{"GET /nov "}, nil},
		{"malformed header skipped", "GET /h HTTP/1.1\nHost: a\nno colon\nBad Name: x\n\n", []string{"GET /h "}, []error{ErrHeader, ErrHeader}},
		{"fold before any header", "GET /h HTTP/1.1\n folded\n\n", []string{"GET /h "}, []error{ErrHeader}},
		{"head at the end of input", "DELETE /d HTTP/1.1\nHost: h", []string{"DELETE /d "}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ms, probs := readAll(t, c.in, false)
			var got []string
			for _, m := range ms {
				got = append(got, m.Method+" "+m.Target+" "+string(m.Body))
				if int64(len(m.Body)) != min(m.BodyLen, MaxBody) {
					t.Errorf("%s: body %d bytes of %d", m.Target, len(m.Body), m.BodyLen)
				}
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", c.want) {
				t.Errorf("requests %q, want %q (problems %v)", got, c.want, probs)
			}
			if len(probs) != len(c.problems) {
				t.Fatalf("problems %v, want %v", probs, c.problems)
			}
			for i, want := range c.problems {
				if !errors.Is(probs[i].Err, want) {
					t.Errorf("problem %d: %v, want %v", i, probs[i].Err, want)
				}
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	ms, _ := readAll(t, "GET / HTTP/1.1\r\nX-Long: a\r\n  b \r\n\tc\r\nHOST : h\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n", false)
	want := []models.Header{{Name: "x-long", Value: "a b c"}, {Name: "host", Value: "h"}, {Name: "x-multi", Value: "1"}, {Name: "x-multi", Value: "2"}}
	if fmt.Sprint(ms[0].Headers) != fmt.Sprint(want) {
		t.Errorf("headers %v, want %v", ms[0].Headers, want)
	}
	if v, ok := ms[0].Header("x-multi"); v != "1, 2" || !ok {
		t.Errorf("x-multi %q %v", v, ok)
	}
	if _, ok := ms[0].Header("absent"); ok {
		t.Error("an absent header is there")
	}
}

func TestLimits(t *testing.T) {
	many := "GET /many HTTP/1.1\n" + strings.Repeat("X-H: v\n", MaxHeaders+1) + "\nGET /after HTTP/1.1\n\n"
	ms, probs := readAll(t, many, false)
	if len(ms) != 1 || ms[0].Target != "/after" || len(probs) != 1 || !errors.Is(probs[0].Err, ErrHead) {
		t.Errorf("too many headers: %v %v", describe(ms), probs)
	}
	big := "GET /big HTTP/1.1\n" + strings.Repeat("X-H: "+strings.Repeat("v", 60000)+"\n", 18) + "\nGET /after HTTP/1.1\n\n"
	ms, probs = readAll(t, big, false)
	if len(ms) != 1 || ms[0].Target != "/after" || len(probs) != 1 || !errors.Is(probs[0].Err, ErrHead) {
		t.Errorf("head too large: %v %v", describe(ms), probs)
	}
	long := "GET /long HTTP/1.1\nX-L: " + strings.Repeat("v", MaxLine) + "\nHost: h\n\n"
	ms, probs = readAll(t, long, false)
	if len(ms) != 1 || len(ms[0].Headers) != 1 || len(probs) != 1 || !errors.Is(probs[0].Err, ErrHeader) {
		t.Errorf("header line too long: %v %v", describe(ms), probs)
	}
	longStart := "GET /" + strings.Repeat("a", MaxLine) + " HTTP/1.1\n\nGET /after HTTP/1.1\n\n"
	ms, probs = readAll(t, longStart, false)
	if len(ms) != 1 || ms[0].Target != "/after" || len(probs) != 1 || !errors.Is(probs[0].Err, ErrStartLine) {
		t.Errorf("request line too long: %v %v", describe(ms), probs)
	}
}

func TestOffsets(t *testing.T) {
	in := "GET /a HTTP/1.1\r\n\r\njunk\r\nPOST /b HTTP/1.1\r\nContent-Length: 1x\r\n\r\n"
	var probs []Problem
	r := NewBytesReader([]byte(in), 100, func(p Problem) { probs = append(probs, p) })
	var offs []int64
	for {
		m, err := r.ReadRequest()
		if err != nil {
			break
		}
		offs = append(offs, m.Off)
	}
	if fmt.Sprint(offs) != "[100 125]" || len(probs) != 2 || probs[0].Off != 119 || probs[1].Off != 125 {
		t.Errorf("messages at %v, problems %v", offs, probs)
	}
}

func TestResponses(t *testing.T) {
	in := "HTTP/1.1 100 Continue\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" +
		"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n" +
		"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n0\r\n\r\n" +
		"<html>garbage\r\n" +
		"HTTP/1.0 200 OK\r\n\r\nto the end"
	ms, probs := readAll(t, in, true)
	var got []string
	for _, m := range ms {
		got = append(got, fmt.Sprintf("%d %q", m.Status, m.Body))
	}
	want := []string{`100 ""`, `200 "ok"`, `204 ""`, `404 "not"`, `200 "to the end"`}
	if fmt.Sprint(got) != fmt.Sprint(want) || len(probs) != 1 || !errors.Is(probs[0].Err, ErrStartLine) {
		t.Errorf("responses %v problems %v, want %v", got, probs, want)
	}
	// A HEAD response has no body whatever its length says.
	r := NewBytesReader([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"), 0, nil)
	for i := 0; i < 2; i++ {
		if m, err := r.ReadResponse("HEAD"); err != nil || m.BodyLen != 0 {
			t.Fatalf("HEAD response %d: %v %v", i, m, err)
		}
	}
}

func TestSkip(t *testing.T) {
	r := NewBytesReader([]byte("dy of a lost request\r\nGET /next HTTP/1.1\r\n\r\n"), 50, func(p Problem) { t.Errorf("reported %v", p) })
	r.Skip()
	m, err := r.ReadRequest()
	if err != nil || m.Target != "/next" || m.Off != 72 {
		t.Errorf("after Skip: %v %v", m, err)
	}
}

func TestSplitTarget(t *testing.T) {
	for in, want := range map[string]string{
		"/a?b":                     "/a?b",
		"/a#frag?x":                "/a",
		"http://h:80/p/q?x=1#frag": "/p/q?x=1",
		"HTTPS://h":                "/",
		"http://h?x=1":             "/?x=1",
		"http://h#f/x":             "/",
		"*":                        "*",
		"h:443":                    "h:443",
		"ftp://h/f":                "ftp://h/f",
	} {
		p, q := SplitTarget(in)
		if q != "" {
			p += "?" + q
		}
		if p != want {
			t.Errorf("SplitTarget(%q) = %q, want %q", in, p, want)
		}
	}
}

func TestStartLines(t *testing.T) {
	for line, want := range map[string]bool{
		"GET / HTTP/1.1":                        true,
		"M-SEARCH * HTTP/1.1":                   true,
		"GET /a b HTTP/1.1":                     false,
		"GET  / HTTP/1.1":                       false,
		"GET /\x01 HTTP/1.1":                    false,
		"GET / HTTP/1.":                         false,
		"GET /":                                 false,
		strings.Repeat("A", 33) + " / HTTP/1.1": false,
	} {
		if got := IsRequestLine([]byte(line)); got != want {
			t.Errorf("IsRequestLine(%q) = %v", line, got)
		}
	}
	for b, want := range map[string]bool{
		"GET / HTTP/1.1\r\n": true, "\r\nGET /old\r\n": true, "BREW /pot\n": true, "BREW\n": false,
		"SSH-2.0-OpenSSH\r\n": false, "HTTP/1.1 200 OK\r\n": false,
	} {
		if got := StartsRequest([]byte(b)); got != want {
			t.Errorf("StartsRequest(%q) = %v", b, got)
		}
	}
	if i := IndexRequestLine([]byte("x\r\nGET / nope\r\nPUT /p HTTP/1.0\r\n")); i != 15 {
		t.Errorf("IndexRequestLine = %d", i)
	}
}

// FuzzReader reads arbitrary bytes as requests and as responses: nothing
// panics, every message lies inside the input, in order, with a bounded
// body prefix, and the bytes and stream inputs agree.
func FuzzReader(f *testing.F) {
	f.Add([]byte("POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /x\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"))
	f.Add([]byte("POST /u HTTP/1.1\n\nbody\n\nGET / HTTP/1.1\nX: 1\n y\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, response := range []bool{false, true} {
			ms, probs := readAll(t, string(in), response)
			last := int64(-1)
			for _, m := range ms {
				if m.Off <= last || m.Off >= int64(len(in)) || len(m.Body) > MaxBody || int64(len(m.Body)) > m.BodyLen || m.BodyLen > int64(len(in)) {
					t.Fatalf("message at %d after %d (body %d of %d) from %d bytes", m.Off, last, len(m.Body), m.BodyLen, len(in))
				}
				last = m.Off
			}
			for _, p := range probs {
				if p.Off < 0 || p.Off > int64(len(in)) {
					t.Fatalf("problem at %d of %d bytes", p.Off, len(in))
				}
			}
		}
	})
}
