package source

import (
	"fmt"

	"github.com/meshward/meshward/replay/source/internal/http1"
)

// closeConn flushes a connection: it reassembles both directions, parses
// HTTP from them and queues the requests.
func (p *pcapReader) closeConn(c *tcpConn) {
	if k := keyOf(c.ends[0], c.ends[1]); p.conns[k] == c {
		delete(p.conns, k)
		p.buffered -= c.half[0].bytes + c.half[1].bytes
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
	case http1.StartsRequest(st[0].data):
		client = 0
	case http1.StartsRequest(st[1].data):
		client = 1
	case http1.IsStatusLine(http1.FirstLine(st[1].data)):
		client = 0
	case http1.IsStatusLine(http1.FirstLine(st[0].data)):
		client = 1
	}
	if client < 0 {
		p.stats.NonHTTPFlows++
		return
	}
	cs, ss := st[client], st[1-client]
	// HTTP if the client starts with a request, or the server answers with
	// a status line (then a malformed request is reported, not skipped).
	isHTTP := http1.StartsRequest(cs.data) || http1.IsStatusLine(http1.FirstLine(ss.data)) ||
		// the start of the request stream is missing: look for a request line
		!c.half[client].synSeen && http1.IndexRequestLine(cs.data[:min(len(cs.data), 64<<10)]) >= 0
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
	reqP := &flowParser{s: cs}
	respP := &flowParser{s: ss, response: true}
	var reqs, resps []*http1.Message
	nextResp := func() bool {
		for {
			method := ""
			if len(resps) < len(reqs) {
				method = reqs[len(resps)].Method
			}
			m, ok := respP.next(method)
			if !ok {
				return false
			}
			if m.Status >= 100 && m.Status < 200 && m.Status != 101 {
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
		if m.Upgrade() {
			for len(resps) < len(reqs) && nextResp() {
			}
			if len(resps) == len(reqs) {
				st := resps[len(resps)-1].Status
				if st == 101 || m.Method == "CONNECT" && st/100 == 2 {
					tunnel = true // the rest is another protocol
					break
				}
			}
		}
	}
	switch {
	case tunnel:
	case len(reqs) > 0 && reqs[0].Proto == "HTTP/0.9" && !http1.IsStatusLine(http1.FirstLine(ss.data)):
		// An HTTP/0.9 response is the bare body, to the end of the stream.
		if len(ss.data) > 0 {
			resps = append(resps, &http1.Message{Off: 0, BodyLen: int64(len(ss.data))})
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
		rec := &Record{Pos: fmt.Sprintf("%s#%d", flow, n+1), TS: cs.tsAt(int(m.Off))}
		r := &rec.Request
		requestFrom(r, m)
		r.Source, r.Destination = src, dst
		if n < len(resps) {
			rs := resps[n]
			r.Status = rs.Status
			r.ResponseBytes = rs.BodyLen
			if d := ss.tsAt(int(rs.Off)).Sub(rec.TS); d > 0 {
				r.Duration = d
			}
			p.stats.Responses++
		}
		p.opt.Overrides.Apply(rec)
		p.push(rec)
	}
}

// flowParser reads the messages of one direction of a TCP connection with
// the HTTP/1 reader, region by region (a region is the bytes between two
// gaps of missing bytes): after a gap it skips to the next start line.
type flowParser struct {
	s        *tcpStream
	response bool
	off      int // start of the region hr reads
	end      int // end of that region
	hr       *http1.Reader
	afterGap bool
	probs    []streamProblem
}

type streamProblem struct {
	off int
	err error
}

// maxFlowProblems bounds the problems kept per direction of a connection
// (they are reported once the connection ends).
const maxFlowProblems = 1000

func (fp *flowParser) problem(p http1.Problem) {
	if len(fp.probs) < maxFlowProblems {
		fp.probs = append(fp.probs, streamProblem{int(p.Off), p.Err})
	}
}

// next returns the next message; method is the request a response answers.
func (fp *flowParser) next(method string) (*http1.Message, bool) {
	data := fp.s.data
	for {
		if fp.hr == nil {
			if fp.off >= len(data) {
				return nil, false
			}
			fp.end = fp.s.regionEnd(fp.off)
			fp.hr = http1.NewBytesReader(data[fp.off:fp.end], int64(fp.off), fp.problem)
			if fp.afterGap {
				fp.hr.Skip()
			}
		}
		var m *http1.Message
		var err error
		if fp.response {
			m, err = fp.hr.ReadResponse(method)
		} else {
			m, err = fp.hr.ReadRequest()
		}
		if err != nil { // io.EOF: a bytes reader fails in no other way
			fp.off, fp.hr, fp.afterGap = fp.end, nil, true
			continue
		}
		if fp.end < len(data) && fp.hr.Offset() >= int64(fp.end) {
			fp.problem(http1.Problem{Off: int64(fp.end), Err: fmt.Errorf("bytes missing from the capture here; skipping to the next %s", kind(fp.response))})
			fp.off, fp.hr, fp.afterGap = fp.end, nil, true
		}
		return m, true
	}
}

func kind(response bool) string {
	if response {
		return "status line"
	}
	return "request line"
}
