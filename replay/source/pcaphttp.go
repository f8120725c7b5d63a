package source

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/meshward/meshward/models"
)

// Bounds of one HTTP message head.
const (
	httpMaxLine    = 64 << 10
	httpMaxHead    = 1 << 20
	httpMaxHeaders = 1000
)

// closeConn flushes a connection: it reassembles both directions, parses
// HTTP from them and queues the requests.
func (p *pcapReader) closeConn(c *tcpConn) {
	if k := keyOf(c.ends[0], c.ends[1]); p.conns[k] == c {
		delete(p.conns, k)
	}
	st := [2]*tcpStream{c.half[0].assemble(&p.stats), c.half[1].assemble(&p.stats)}
	if !c.half[0].synSeen && !c.half[1].synSeen && len(st[0].data)+len(st[1].data) == 0 {
		return // stray ACKs, e.g. after both FINs
	}
	p.stats.TCPFlows++
	if len(st[0].data)+len(st[1].data) == 0 {
		p.stats.skip("tcp flows without payload", 1)
		return
	}
	client := -1
	switch {
	case c.synFrom >= 0:
		client = c.synFrom
	case c.synAckBy >= 0:
		client = 1 - c.synAckBy
	case httpRequestStart(st[0].data):
		client = 0
	case httpRequestStart(st[1].data):
		client = 1
	case isStatusLine(firstLine(st[1].data)):
		client = 0
	case isStatusLine(firstLine(st[0].data)):
		client = 1
	}
	if client < 0 {
		p.stats.NonHTTPFlows++
		return
	}
	cs, ss := st[client], st[1-client]
	// HTTP if the client starts with a request, or the server answers with
	// a status line (then a malformed request is reported, not skipped).
	isHTTP := httpRequestStart(cs.data) || isStatusLine(firstLine(ss.data)) ||
		// the start of the request stream is missing: look for a request line
		!c.half[client].synSeen && findStartLine(cs.data[:min(len(cs.data), 64<<10)], 0, true, false) >= 0
	if !isHTTP {
		p.stats.NonHTTPFlows++
		return
	}
	p.stats.HTTPFlows++
	p.httpFlow(c, client, cs, ss)
}

func (p *pcapReader) httpFlow(c *tcpConn, client int, cs, ss *tcpStream) {
	caddr, saddr := c.ends[client], c.ends[1-client]
	flow := fmt.Sprintf("%s:flow %s→%s", p.name, caddr, saddr)
	reqP := &httpParser{s: cs}
	respP := &httpParser{s: ss, response: true}
	var reqs, resps []*httpMsg
	nextResp := func() bool {
		for {
			method := ""
			if len(resps) < len(reqs) {
				method = reqs[len(resps)].method
			}
			m, ok := respP.next(method)
			if !ok {
				return false
			}
			if m.status >= 100 && m.status < 200 && m.status != 101 {
				continue // interim (100 Continue)
			}
			resps = append(resps, m)
			return true
		}
	}
	tunnel := false
	for {
		m, ok := reqP.next("")
		if !ok {
			break
		}
		reqs = append(reqs, m)
		if m.upgrade {
			for len(resps) < len(reqs) && nextResp() {
			}
			if len(resps) == len(reqs) {
				st := resps[len(resps)-1].status
				if st == 101 || m.method == "CONNECT" && st/100 == 2 {
					tunnel = true // the rest is another protocol
					break
				}
			}
		}
	}
	switch {
	case tunnel:
	case len(reqs) > 0 && reqs[0].proto == "HTTP/0.9" && !isStatusLine(firstLine(ss.data)):
		// An HTTP/0.9 response is the bare body, to the end of the stream.
		if len(ss.data) > 0 {
			resps = append(resps, &httpMsg{start: 0, bodyLen: int64(len(ss.data))})
		}
	default:
		for len(resps) < len(reqs) && nextResp() {
		}
		extra := 0
		for nextResp() {
			extra++
		}
		if extra > 0 {
			p.stats.skip("responses without a request", extra)
		}
	}
	for _, pr := range reqP.probs {
		p.problem(fmt.Sprintf("%s client@%d", flow, pr.off), pr.err)
	}
	for _, pr := range respP.probs {
		p.problem(fmt.Sprintf("%s server@%d", flow, pr.off), pr.err)
	}
	src, dst := p.identity(caddr.Addr()), p.identity(saddr.Addr())
	for n, m := range reqs {
		rec := &Record{Pos: fmt.Sprintf("%s#%d", flow, n+1), TS: cs.tsAt(m.start)}
		r := &rec.Request
		r.Method = m.method
		r.Path, r.Query = splitRequestTarget(m.target)
		r.Headers = m.headers
		r.Body = m.body
		r.RequestBytes = m.bodyLen
		r.Source, r.Destination = src, dst
		if n < len(resps) {
			rs := resps[n]
			r.Status = rs.status
			r.ResponseBytes = rs.bodyLen
			if d := ss.tsAt(rs.start).Sub(rec.TS); d > 0 {
				r.Duration = d
			}
			p.stats.Responses++
		}
		p.opt.Overrides.Apply(rec)
		p.push(rec)
	}
}

// splitRequestTarget turns a request target into path and query; an
// absolute URI keeps its path and query, "*" and authority forms stay whole.
func splitRequestTarget(target string) (string, string) {
	if !strings.HasPrefix(target, "/") {
		if i := strings.Index(target, "://"); i >= 0 {
			rest := target[i+3:]
			if k := strings.IndexAny(rest, "/?"); k >= 0 {
				target = rest[k:]
				if target[0] == '?' {
					target = "/" + target
				}
			} else {
				target = "/"
			}
		}
	}
	return models.SplitTarget(target)
}

// httpMsg is one parsed request or response.
type httpMsg struct {
	start                 int // offset of the start line in the stream
	method, target, proto string
	status                int
	headers               []models.Header
	body                  []byte // at most models.MaxBodyPrefix bytes
	bodyLen               int64
	upgrade               bool // asks to switch protocols (Upgrade, CONNECT)
}

type streamProblem struct {
	off int
	err error
}

// httpParser reads the messages of one direction, in order, skipping over
// malformed parts to the next start line.
type httpParser struct {
	s        *tcpStream
	off      int
	resync   bool // look for a start line before parsing
	atGap    bool // off is the start of a region after missing bytes
	response bool
	probs    []streamProblem
}

func (hp *httpParser) problem(off int, format string, args ...any) {
	if len(hp.probs) < 1000 {
		hp.probs = append(hp.probs, streamProblem{off, fmt.Errorf(format, args...)})
	}
}

// next returns the next message; method is the request a response answers.
func (hp *httpParser) next(method string) (*httpMsg, bool) {
	data := hp.s.data
	for hp.off < len(data) {
		end := hp.s.regionEnd(hp.off)
		b := data[:end]
		if hp.resync {
			i := findStartLine(b, hp.off, hp.atGap, hp.response)
			hp.atGap = false
			if i < 0 {
				hp.off = end
				if end < len(data) {
					hp.atGap = true
				}
				continue
			}
			hp.off, hp.resync = i, false
		}
		i := hp.off
		for i < end && (b[i] == '\r' || b[i] == '\n') {
			i++
		}
		if i == end {
			hp.off = end
			if end < len(data) {
				hp.resync, hp.atGap = true, true
			}
			continue
		}
		var m *httpMsg
		var next int
		var err error
		if hp.response {
			m, next, err = hp.parseResponse(b, i, method)
		} else {
			m, next, err = hp.parseRequest(b, i)
		}
		if err != nil {
			if len(hp.probs) < 1000 {
				hp.probs = append(hp.probs, streamProblem{i, err})
			}
			hp.off, hp.resync = i+1, true
			continue
		}
		hp.off = next
		if next >= end && end < len(data) {
			hp.problem(end, "bytes missing from the capture here; skipping to the next %s", kind(hp.response))
			hp.resync, hp.atGap = true, true
		}
		return m, true
	}
	return nil, false
}

func kind(response bool) string {
	if response {
		return "status line"
	}
	return "request line"
}

var errNoURI = errors.New("request line has no URI")

// parseRequest parses the request starting at b[i].
func (hp *httpParser) parseRequest(b []byte, i int) (*httpMsg, int, error) {
	line, j := lineAt(b, i)
	if len(line) > httpMaxLine {
		return nil, 0, fmt.Errorf("request line longer than %d bytes", httpMaxLine)
	}
	f := bytes.Fields(line)
	if len(f) == 0 || !isToken(f[0]) {
		return nil, 0, fmt.Errorf("malformed request line %q", clip(line))
	}
	m := &httpMsg{start: i, method: string(f[0])}
	switch last := f[len(f)-1]; {
	case len(f) == 1 || len(f) == 2 && isVersion(last):
		return nil, 0, fmt.Errorf("%w: %q", errNoURI, clip(line))
	case len(f) >= 3 && isVersion(last):
		m.proto = string(last)
		m.target = string(bytes.Join(f[1:len(f)-1], []byte(" ")))
		if len(f) > 3 {
			hp.problem(i, "request target with white space in %q", clip(line))
		}
	case len(f) == 3 && bytes.HasPrefix(last, []byte("HTTP/")):
		// "GET / HTTP/1." and the like: servers answer these; keep them.
		m.proto, m.target = string(last), string(f[1])
		hp.problem(i, "malformed HTTP version in %q", clip(line))
	case len(f) == 2:
		m.proto = "HTTP/0.9"
		m.target = string(f[1])
		if nl, _ := lineAt(b, j); !looksLikeHeader(nl) {
			return m, j, nil
		}
	default:
		return nil, 0, fmt.Errorf("malformed request line %q", clip(line))
	}
	k, err := hp.parseHeaders(b, j, m)
	if err != nil {
		return nil, 0, err
	}
	if m.method == "CONNECT" || m.header("upgrade") != "" {
		m.upgrade = true
	}
	return m, hp.parseBody(b, k, m, false), nil
}

// parseResponse parses the response starting at b[i].
func (hp *httpParser) parseResponse(b []byte, i int, method string) (*httpMsg, int, error) {
	line, j := lineAt(b, i)
	if !isStatusLine(line) {
		return nil, 0, fmt.Errorf("malformed status line %q", clip(line))
	}
	m := &httpMsg{start: i}
	m.proto = string(line[:8])
	m.status, _ = strconv.Atoi(string(line[9:12]))
	k, err := hp.parseHeaders(b, j, m)
	if err != nil {
		return nil, 0, err
	}
	if method == "HEAD" || m.status/100 == 1 || m.status == 204 || m.status == 304 ||
		method == "CONNECT" && m.status/100 == 2 {
		return m, k, nil
	}
	return m, hp.parseBody(b, k, m, true), nil
}

// parseHeaders reads header lines from b[i] to the blank line and returns
// the offset after it.
func (hp *httpParser) parseHeaders(b []byte, i int, m *httpMsg) (int, error) {
	start := i
	for {
		if i >= len(b) {
			hp.problem(i, "message head cut short (no blank line)")
			return i, nil
		}
		if i-start > httpMaxHead {
			return 0, fmt.Errorf("message head longer than %d bytes", httpMaxHead)
		}
		line, j := lineAt(b, i)
		if len(line) == 0 {
			return j, nil
		}
		if line[0] == ' ' || line[0] == '\t' { // obs-fold
			if n := len(m.headers); n > 0 {
				m.headers[n-1].Value += " " + string(bytes.TrimSpace(line))
			} else {
				hp.problem(i, "continuation line before any header")
			}
			i = j
			continue
		}
		if !hp.response && isRequestLine(line) {
			hp.problem(i, "request head ends without a blank line")
			return i, nil
		}
		c := bytes.IndexByte(line, ':')
		name := bytes.TrimRight(line[:max(c, 0)], " \t")
		if c <= 0 || !isToken(name) {
			hp.problem(i, "malformed header line %q", clip(line))
			i = j
			continue
		}
		if len(m.headers) >= httpMaxHeaders {
			return 0, fmt.Errorf("more than %d header lines", httpMaxHeaders)
		}
		m.headers = append(m.headers, models.Header{
			Name:  strings.ToLower(string(name)),
			Value: string(bytes.Trim(line[c+1:], " \t")),
		})
		i = j
	}
}

func (m *httpMsg) header(name string) string {
	var vs []string
	for _, h := range m.headers {
		if h.Name == name {
			vs = append(vs, h.Value)
		}
	}
	return strings.Join(vs, ", ")
}

// parseBody reads the body from b[i] (chunked, by Content-Length, or for a
// response without either, to the end) and returns the offset after it.
func (hp *httpParser) parseBody(b []byte, i int, m *httpMsg, response bool) int {
	chunked := false
	if te := m.header("transfer-encoding"); te != "" {
		for _, t := range strings.Split(te, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "chunked") {
				chunked = true
			}
		}
	}
	if chunked {
		return hp.parseChunked(b, i, m)
	}
	n := int64(-1)
	for _, h := range m.headers {
		if h.Name != "content-length" {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(h.Value), 10, 64)
		if err != nil || v < 0 {
			hp.problem(m.start, "invalid Content-Length %q", clip([]byte(h.Value)))
			continue
		}
		if n >= 0 && v != n {
			hp.problem(m.start, "conflicting Content-Length values %d and %d; using the first", n, v)
			continue
		}
		n = v
	}
	if n < 0 {
		if !response {
			return i
		}
		n = int64(len(b) - i) // read to the end of the stream
	}
	if n > int64(len(b)-i) {
		hp.problem(m.start, "body cut short: %d of %d bytes", len(b)-i, n)
		n = int64(len(b) - i)
	}
	m.setBody(b[i : i+int(n)])
	return i + int(n)
}

func (m *httpMsg) setBody(b []byte) {
	m.bodyLen = int64(len(b))
	if len(b) > models.MaxBodyPrefix {
		b = b[:models.MaxBodyPrefix]
	}
	if len(b) > 0 {
		m.body = append([]byte(nil), b...)
	}
}

func (hp *httpParser) parseChunked(b []byte, i int, m *httpMsg) int {
	var body []byte
	var total int64
	defer func() {
		m.bodyLen = total
		if len(body) > 0 {
			m.body = body
		}
	}()
	for {
		if i >= len(b) {
			hp.problem(i, "chunked body cut short")
			return i
		}
		line, j := lineAt(b, i)
		sz := line
		if k := bytes.IndexByte(sz, ';'); k >= 0 {
			sz = sz[:k]
		}
		sz = bytes.TrimSpace(sz)
		n, err := strconv.ParseUint(string(sz), 16, 64)
		if err != nil || n > math.MaxInt64-uint64(total) {
			hp.problem(i, "bad chunk size %q", clip(line))
			return i
		}
		if n == 0 {
			for { // trailers
				if j >= len(b) {
					return j
				}
				tl, k := lineAt(b, j)
				j = k
				if len(tl) == 0 {
					return j
				}
			}
		}
		d := b[j:]
		if uint64(len(d)) < n {
			hp.problem(i, "chunk cut short: %d of %d bytes", len(d), n)
			n = uint64(len(d))
		}
		d = d[:n]
		total += int64(n)
		if room := models.MaxBodyPrefix - len(body); room > 0 {
			body = append(body, d[:min(len(d), room)]...)
		}
		i = j + int(n)
		if i < len(b) && b[i] == '\r' {
			i++
		}
		if i < len(b) && b[i] == '\n' {
			i++
		}
	}
}

// lineAt returns the line at b[i] without its CR LF, and the offset after
// it; a last line without LF runs to the end of b.
func lineAt(b []byte, i int) ([]byte, int) {
	k := bytes.IndexByte(b[i:], '\n')
	if k < 0 {
		return bytes.TrimSuffix(b[i:], []byte("\r")), len(b)
	}
	return bytes.TrimSuffix(b[i:i+k], []byte("\r")), i + k + 1
}

func firstLine(b []byte) []byte {
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++
	}
	l, _ := lineAt(b, i)
	return l
}

// findStartLine returns the offset of the first line in b at or after from
// that is a request line (or a status line); from itself counts only when
// here is set, else the search starts at the next line.
func findStartLine(b []byte, from int, here, response bool) int {
	i := from
	if !here {
		k := bytes.IndexByte(b[from:], '\n')
		if k < 0 {
			return -1
		}
		i = from + k + 1
	}
	for i < len(b) {
		line, j := lineAt(b, i)
		if response && isStatusLine(line) || !response && isRequestLine(line) {
			return i
		}
		i = j
	}
	return -1
}

// knownMethods are the methods accepted in a request line without a version.
var knownMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true, "CONNECT": true,
	"OPTIONS": true, "TRACE": true, "PATCH": true, "PROPFIND": true, "PROPPATCH": true,
	"MKCOL": true, "COPY": true, "MOVE": true, "LOCK": true, "UNLOCK": true,
}

// httpRequestStart reports whether a stream starts like an HTTP request: a
// request line, or a known method alone or with a target (HTTP/0.9).
func httpRequestStart(b []byte) bool {
	line := firstLine(b)
	if isRequestLine(line) {
		return true
	}
	f := bytes.Fields(line)
	if len(f) == 0 || len(f) > 2 || len(line) > len(f[0]) && line[len(f[0])] != ' ' {
		return false
	}
	if knownMethods[string(f[0])] {
		return true
	}
	// HTTP/0.9 with an unknown method: upper-case letters and a path.
	for _, c := range f[0] {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return len(f) == 2 && f[1][0] == '/'
}

// isRequestLine reports whether line is METHOD SP target SP HTTP/x.y.
func isRequestLine(line []byte) bool {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || sp > 32 || !isToken(line[:sp]) {
		return false
	}
	rest := line[sp+1:]
	sp2 := bytes.LastIndexByte(rest, ' ')
	return sp2 > 0 && isVersion(rest[sp2+1:]) && rest[0] != ' '
}

// isStatusLine reports whether line is HTTP/x.y SP 3DIGIT [SP reason].
func isStatusLine(line []byte) bool {
	return len(line) >= 12 && isVersion(line[:8]) && line[8] == ' ' &&
		isDigit(line[9]) && isDigit(line[10]) && isDigit(line[11]) && (len(line) == 12 || line[12] == ' ')
}

func isVersion(b []byte) bool {
	return len(b) == 8 && string(b[:5]) == "HTTP/" && isDigit(b[5]) && b[6] == '.' && isDigit(b[7])
}

func looksLikeHeader(line []byte) bool {
	c := bytes.IndexByte(line, ':')
	return c > 0 && isToken(line[:c])
}
