package source

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/meshward/meshward/models"
)

// agreePrefix starts every stream FuzzSourcesAgree reads: a request, so
// that the capture's connection is told HTTP by its first bytes (a TCP
// flow that does not start like HTTP is another protocol, and skipped) and
// the fuzzed bytes start where a request is expected.
const agreePrefix = "GET /agree HTTP/1.1\r\nHost: a\r\n\r\n"

// FuzzSourcesAgree feeds the same bytes to the raw source and, as the
// client side of a TCP connection in a capture, to the pcap source: both
// must make the same requests and report the same problems at the same
// offsets. One HTTP/1 reader serves both; this is what keeps it one.
func FuzzSourcesAgree(f *testing.F) {
	for _, s := range []string{
		"GET /x?a=1#frag HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.0\n\n",
		"POST /c HTTP/1.1\nTransfer-Encoding: gzip, chunked\n\n3;x=1\nabc\n0\nT: 1\n\n",
		"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\nGET /z HTTP/1.1\r\n\r\n",
		"POST /u HTTP/1.1\nTransfer-Encoding: chunked, identity\n\nbody\n\nGET / HTTP/1.1\n\n",
		"junk\n\nPOST http://h/p?q HTTP/1.1\n\nbody\n\nGET / HTTP/1.1\n",
		"GET HTTPS://h HTTP/1.1\nX-A: 1\n  folded\nbad line\n\nGET ftp://h/f HTTP/1.1\n\n",
		"GET  /a b   HTTP/1.1\r\n\r\nGET /v HTTP/1.\r\n\r\nGET /old\r\n\r\nGET /nov\r\nHost: x\r\n\r\n",
		"POST /cl HTTP/1.1\nContent-Length: 5, 5\nContent-Length: 7\n\nhelloGET /w HTTP/1.1\n\n",
		"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
		"POST /trunc HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort",
		"G\x01T /x HTTP/1.1\r\n\r\nGET /a\x01b HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Add(rawBenchInput(3))
	f.Fuzz(func(t *testing.T, in []byte) {
		stream := append([]byte(agreePrefix), in...)

		var raw []*Record
		var rawProbs []string
		err := ReadRawHTTP(bytes.NewReader(stream), "raw", Overrides{},
			func(r *Record) error { raw = append(raw, r); return nil },
			func(p Problem) {
				rawProbs = append(rawProbs, strings.TrimPrefix(p.Pos, "raw:offset ")+" "+p.Err.Error())
			})
		if err != nil {
			t.Fatalf("raw: %v", err)
		}

		b := newCap(t, "eth")
		c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
		for rest := string(stream); rest != ""; {
			n := min(len(rest), 1400)
			c.client(rest[:n])
			rest = rest[n:]
		}
		c.close()
		res := readCap(t, b.pcap(), PcapOptions{})
		if res.err != nil {
			t.Fatalf("pcap: %v", res.err)
		}
		var capProbs []string
		const flow = "fx.pcap:flow 10.0.0.1:40000→10.0.0.2:80 client@"
		for _, p := range res.probs {
			off, ok := strings.CutPrefix(p.Pos, flow)
			if !ok {
				t.Fatalf("pcap: a problem outside the client's stream: %v", p)
			}
			capProbs = append(capProbs, off+" "+p.Err.Error())
		}

		if len(raw) != len(res.recs) {
			t.Fatalf("raw made %d requests, pcap %d:\nraw  %s\npcap %s", len(raw), len(res.recs), summary(raw), summary(res.recs))
		}
		for i := range raw {
			if a, b := agreeView(raw[i].Request), agreeView(res.recs[i].Request); !reflect.DeepEqual(a, b) {
				t.Fatalf("request %d differs:\nraw  %+v\npcap %+v", i, a, b)
			}
		}
		if len(capProbs) < maxFlowProblems && !reflect.DeepEqual(rawProbs, capProbs) {
			t.Fatalf("problems differ:\nraw  %q\npcap %q", rawProbs, capProbs)
		}
	})
}

// agreeView is what a request read from HTTP/1 bytes holds, the container
// aside (a capture adds addresses, times and the response).
func agreeView(q models.Request) models.Request {
	return models.Request{Method: q.Method, Path: q.Path, Query: q.Query, Headers: q.Headers, Body: q.Body, RequestBytes: q.RequestBytes}
}

func summary(recs []*Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "[%s %s?%s %dB] ", r.Request.Method, r.Request.Path, r.Request.Query, r.Request.RequestBytes)
	}
	return b.String()
}
