// Package http1 reads HTTP/1.x messages out of captured bytes, leniently,
// for the sources of package source that carry them: raw request files and
// the reassembled TCP streams of a pcap. One reader means one answer to
// "which requests do these bytes make", whatever container they came in.
//
// Lenient means: take what a server would have answered, report what is
// malformed with its offset, and lose nothing else. Where a request is
// expected, a request line may have runs of white space, white space in
// its target, a malformed version or none (HTTP/0.9). Line ends may be
// CRLF or LF; blank lines may separate messages; header lines may be
// folded (obs-fold). A malformed header line is reported and skipped; a
// malformed start line is reported and the reader skips to the next line
// that IsRequestLine (IsStatusLine for responses), with nothing reported
// for the lines skipped.
//
// Framing follows RFC 9112 §6.3 where it can: Transfer-Encoding whose last
// coding is chunked, else the first valid Content-Length (a conflicting or
// invalid one is reported and passed over), else, for a response, the rest
// of the input. A request with neither, or whose Transfer-Encoding does not
// end in chunked (reported), has as body the lines up to the next request
// line, less the blank lines before it: files of requests written by hand
// leave Content-Length out, and a form a client sent unframed is kept with
// the request that sent it, and scored. Requests whose method gives a body
// no meaning (GET, HEAD, DELETE, OPTIONS, TRACE, CONNECT) and requests that
// ask to switch protocols have no unframed body: what follows them is the
// next request, or reported and skipped up to it. A body cut short, or a
// chunk that is, is reported and kept as far as it goes; after a framing
// error in a chunked body the reader skips to the next request line.
//
// The request target is refused when it has control bytes, or is the
// absolute form of a scheme other than http or https; SplitTarget is the
// one normalisation of an accepted target (see there).
package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/meshward/meshward/models"
)

// Bounds of one message, for every source alike.
const (
	// MaxLine bounds a start line, a header line and a chunk-size line; a
	// longer header line is skipped (reported), a longer start line is
	// malformed.
	MaxLine = 64 << 10
	// MaxHead bounds the header section (and a chunked body's trailers).
	MaxHead = 1 << 20
	// MaxHeaders bounds the header fields of one message.
	MaxHeaders = 1000
)

// Problems are reported with an error wrapping one of these.
var (
	// ErrStartLine: a malformed request or status line.
	ErrStartLine = errors.New("malformed start line")
	// ErrNoURI: a request line without a target (an ErrStartLine too).
	ErrNoURI = fmt.Errorf("%w: request line has no URI", ErrStartLine)
	// ErrHeader: a malformed header line (skipped).
	ErrHeader = errors.New("malformed header line")
	// ErrHead: a header section over MaxHead or MaxHeaders (the message is
	// skipped).
	ErrHead = errors.New("header section too large")
	// ErrFraming: a Content-Length, Transfer-Encoding or chunk that does
	// not frame the body.
	ErrFraming = errors.New("bad body framing")
	// ErrTruncated: a body the input ends inside of.
	ErrTruncated = errors.New("body cut short")
)

// Message is one request or response.
type Message struct {
	// Off is the offset of its start line.
	Off int64
	// Method and Target are a request's; Proto is "HTTP/x.y", "HTTP/0.9"
	// for a request line without version, or the malformed version as sent.
	Method, Target, Proto string
	// Status is a response's.
	Status int
	// Headers in order, names in lower case, folded lines joined by a space.
	Headers []models.Header
	// Body is the first MaxBody bytes of the body (de-chunked); BodyLen its
	// whole length.
	Body    []byte
	BodyLen int64
}

// Header returns the values of the named (lower-case) header joined by
// ", ", and whether there was one.
func (m *Message) Header(name string) (string, bool) {
	var vs []string
	for _, h := range m.Headers {
		if h.Name == name {
			vs = append(vs, h.Value)
		}
	}
	return strings.Join(vs, ", "), vs != nil
}

// Upgrade reports whether the request asks to switch protocols (CONNECT,
// or an Upgrade header): what follows an answer that agrees is not HTTP.
func (m *Message) Upgrade() bool {
	_, up := m.Header("upgrade")
	return m.Method == "CONNECT" || up
}

// Problem is a malformed stretch of input: where it starts, and what.
type Problem struct {
	Off int64
	Err error
}

// Reader reads the messages of one direction of a connection (or one
// file of requests), in order.
type Reader struct {
	lr      lineReader
	problem func(Problem)
	resync  bool // skip lines up to the next start line
}

// NewReader reads from r; offsets count from base. problem, when not nil,
// is called for each malformed stretch.
func NewReader(r io.Reader, base int64, problem func(Problem)) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &Reader{lr: lineReader{src: br, off: base}, problem: problem}
}

// NewBytesReader reads b, which is not copied; offsets count from base.
func NewBytesReader(b []byte, base int64, problem func(Problem)) *Reader {
	return &Reader{lr: lineReader{src: &bytesSource{b: b}, off: base}, problem: problem}
}

// Offset is the offset of the next byte the reader has not consumed.
func (r *Reader) Offset() int64 { return r.lr.offset() }

// Skip makes the reader pass over everything up to the next start line,
// without reporting it: for input that starts after missing bytes.
func (r *Reader) Skip() { r.resync = true }

func (r *Reader) report(off int64, err error) {
	if r.problem != nil {
		r.problem(Problem{Off: off, Err: err})
	}
}

// fail reports a problem that ends the message: the reader skips to the
// next start line.
func (r *Reader) fail(off int64, err error) {
	r.report(off, err)
	r.resync = true
}

// startLine returns the next line that may start a message: blank lines
// are passed over, and while skipping every line that is not a start line.
func (r *Reader) startLine(response bool) (line, error) {
	for {
		l, err := r.lr.next()
		if err != nil {
			return l, err
		}
		switch {
		case r.resync:
			if !l.long && (!response && IsRequestLine(l.b) || response && IsStatusLine(l.b)) {
				r.resync = false
				return l, nil
			}
		case !isBlank(l.b):
			return l, nil
		}
	}
}

// ReadRequest returns the next request; io.EOF at the end of input. Any
// other error is the underlying reader's: malformed input is reported to
// the problem function, never returned.
func (r *Reader) ReadRequest() (*Message, error) {
	for {
		l, err := r.startLine(false)
		if err != nil {
			return nil, err
		}
		if l.long {
			r.fail(l.off, fmt.Errorf("%w: request line longer than %d bytes", ErrStartLine, MaxLine))
			continue
		}
		method, target, proto, warn, perr := parseRequestLine(l.b)
		if perr != nil {
			r.fail(l.off, perr)
			continue
		}
		if warn != nil {
			r.report(l.off, warn)
		}
		m := &Message{Off: l.off, Method: method, Target: target, Proto: proto}
		if proto == "HTTP/0.9" {
			// A bare HTTP/0.9 request ends with its line, unless header
			// lines follow (a client that left the version out).
			nl, err := r.lr.next()
			if errors.Is(err, io.EOF) {
				return m, nil
			}
			if err != nil {
				return nil, err
			}
			r.lr.unread(nl)
			if nl.long || !looksLikeHeader(nl.b) {
				return m, nil
			}
		}
		end, err := r.head(m, false)
		switch {
		case err != nil:
			return nil, err
		case end == headFailed:
			continue
		case end == headNext:
			return m, nil
		}
		return m, r.body(m, false)
	}
}

// ReadResponse returns the next response, to a request with the given
// method (HEAD and CONNECT change the framing); io.EOF at the end of input.
func (r *Reader) ReadResponse(method string) (*Message, error) {
	for {
		l, err := r.startLine(true)
		if err != nil {
			return nil, err
		}
		if l.long || !IsStatusLine(l.b) {
			r.fail(l.off, fmt.Errorf("%w: %q", ErrStartLine, clip(l.b)))
			continue
		}
		m := &Message{Off: l.off, Proto: string(l.b[:8])}
		m.Status, _ = strconv.Atoi(string(l.b[9:12]))
		end, err := r.head(m, true)
		if err != nil {
			return nil, err
		}
		if end == headFailed {
			continue
		}
		if method == "HEAD" || m.Status/100 == 1 || m.Status == 204 || m.Status == 304 ||
			method == "CONNECT" && m.Status/100 == 2 {
			return m, nil
		}
		return m, r.body(m, true)
	}
}

// How a header section ended.
const (
	headBlank  = iota // at a blank line, or the end of input
	headNext          // at the next request line: the message has no body
	headFailed        // too large: reported, the message is skipped
)

// head reads header lines up to the blank line that ends them.
func (r *Reader) head(m *Message, response bool) (int, error) {
	size := 0
	for {
		h, err := r.lr.next()
		if errors.Is(err, io.EOF) {
			return headBlank, nil
		}
		if err != nil {
			return headFailed, err
		}
		size += h.n
		if size > MaxHead {
			r.fail(h.off, fmt.Errorf("%w: header section longer than %d bytes", ErrHead, MaxHead))
			return headFailed, nil
		}
		switch {
		case h.long:
			r.report(h.off, fmt.Errorf("%w: longer than %d bytes, skipped", ErrHeader, MaxLine))
			continue
		case isBlank(h.b):
			return headBlank, nil
		case h.b[0] == ' ' || h.b[0] == '\t': // obs-fold
			if n := len(m.Headers); n > 0 {
				last := &m.Headers[n-1]
				last.Value = strings.Trim(last.Value+" "+string(trimOWS(h.b)), " \t")
			} else {
				r.report(h.off, fmt.Errorf("%w: continuation line before any header, skipped", ErrHeader))
			}
			continue
		case !response && IsRequestLine(h.b):
			// The next request, with no blank line before it.
			r.lr.unread(h)
			return headNext, nil
		}
		colon := bytes.IndexByte(h.b, ':')
		var name []byte
		if colon > 0 {
			name = bytes.TrimRight(h.b[:colon], " \t")
		}
		if !isToken(name) {
			r.report(h.off, fmt.Errorf("%w: %q, skipped", ErrHeader, clip(h.b)))
			continue
		}
		if len(m.Headers) >= MaxHeaders {
			r.fail(h.off, fmt.Errorf("%w: more than %d header fields", ErrHead, MaxHeaders))
			return headFailed, nil
		}
		m.Headers = append(m.Headers, models.Header{Name: lowerASCII(name), Value: string(trimOWS(h.b[colon+1:]))})
	}
}

// body reads the body that follows m's head (see the package comment for
// the framing).
func (r *Reader) body(m *Message, response bool) error {
	var body prefix
	defer func() {
		m.BodyLen = body.n
		if body.n > 0 {
			m.Body = body.b
		}
	}()
	if te, ok := m.Header("transfer-encoding"); ok {
		codings := strings.Split(te, ",")
		if strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked") {
			return r.chunked(&body)
		}
		if response {
			return r.lr.readAll(&body)
		}
		r.report(m.Off, fmt.Errorf("%w: Transfer-Encoding %q does not end in chunked", ErrFraming, clip([]byte(te))))
		return r.unframed(m, &body)
	}
	n := r.contentLength(m)
	switch {
	case n >= 0:
		err := r.lr.readN(n, &body)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			r.report(m.Off, fmt.Errorf("%w: %d of %d bytes (Content-Length)", ErrTruncated, body.n, n))
			return nil
		}
		return err
	case response:
		return r.lr.readAll(&body)
	default:
		return r.unframed(m, &body)
	}
}

// contentLength returns the first valid Content-Length, -1 when there is
// none; invalid and conflicting values are reported and passed over.
func (r *Reader) contentLength(m *Message) int64 {
	n := int64(-1)
	for _, h := range m.Headers {
		if h.Name != "content-length" {
			continue
		}
		v, ok := parseLength(h.Value)
		switch {
		case !ok:
			r.report(m.Off, fmt.Errorf("%w: invalid Content-Length %q, passed over", ErrFraming, clip([]byte(h.Value))))
		case n >= 0 && v != n:
			r.report(m.Off, fmt.Errorf("%w: conflicting Content-Length values %d and %d; using the first", ErrFraming, n, v))
		case n < 0:
			n = v
		}
	}
	return n
}

// parseLength reads a Content-Length value: digits, or a list of equal
// ones (RFC 9110 §8.6 lets a recipient take "5, 5" as 5).
func parseLength(v string) (int64, bool) {
	n := int64(-1)
	for _, p := range strings.Split(v, ",") {
		p = strings.Trim(p, " \t")
		if p == "" || strings.TrimLeft(p, "0123456789") != "" {
			return 0, false
		}
		// Leading zeros are digits too ("0050" is 50); past 18 significant
		// digits the value does not fit an int64.
		if p = strings.TrimLeft(p, "0"); p == "" {
			p = "0"
		}
		if len(p) > 18 {
			return 0, false
		}
		x, _ := strconv.ParseInt(p, 10, 64)
		if n >= 0 && x != n {
			return 0, false
		}
		n = x
	}
	return n, true
}

// chunked reads a chunked body and its trailer section.
func (r *Reader) chunked(body *prefix) error {
	for {
		l, err := r.lr.next()
		if errors.Is(err, io.EOF) {
			r.report(r.lr.offset(), fmt.Errorf("%w: chunked body without its last chunk", ErrTruncated))
			return nil
		}
		if err != nil {
			return err
		}
		n, ok := parseChunkSize(l)
		if !ok || n > math.MaxInt64-uint64(body.n) {
			r.report(l.off, fmt.Errorf("%w: bad chunk size %q", ErrFraming, clip(l.b)))
			r.lr.unread(l) // it may be the next request line
			r.resync = true
			return nil
		}
		if n == 0 {
			return r.trailers()
		}
		if err := r.lr.readN(int64(n), body); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				r.report(l.off, fmt.Errorf("%w: chunk of %d bytes", ErrTruncated, n))
				return nil
			}
			return err
		}
		e, err := r.lr.next() // the line end after the data
		if errors.Is(err, io.EOF) {
			r.report(r.lr.offset(), fmt.Errorf("%w: chunked body without its last chunk", ErrTruncated))
			return nil
		}
		if err != nil {
			return err
		}
		if e.long || len(e.b) != 0 {
			r.report(e.off, fmt.Errorf("%w: chunk data not followed by a line end", ErrFraming))
			r.lr.unread(e)
			r.resync = true
			return nil
		}
	}
}

// parseChunkSize reads a chunk-size line: hex digits, then optional
// extensions after ";".
func parseChunkSize(l line) (uint64, bool) {
	if l.long {
		return 0, false
	}
	sz := l.b
	if i := bytes.IndexByte(sz, ';'); i >= 0 {
		sz = sz[:i]
	}
	sz = trimOWS(sz)
	if len(sz) == 0 || len(sz) > 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(sz), 16, 64)
	return n, err == nil
}

// trailers reads the trailer section up to a blank line, the end of input
// or the next request line; the fields are not kept.
func (r *Reader) trailers() error {
	size := 0
	for {
		l, done, err := r.bodyLine()
		if done || err != nil {
			return err
		}
		size += l.n
		switch {
		case isBlank(l.b) && !l.long:
			return nil
		case size > MaxHead:
			r.fail(l.off, fmt.Errorf("%w: trailer section longer than %d bytes", ErrHead, MaxHead))
			return nil
		}
	}
}

// bodiless are the methods whose requests have no body without framing
// (RFC 9110 gives theirs no meaning): what follows them that is not a
// request is reported and skipped, not taken as theirs.
var bodiless = map[string]bool{"GET": true, "HEAD": true, "DELETE": true, "OPTIONS": true, "TRACE": true, "CONNECT": true}

// unframed reads a request body that has no framing: the lines up to the
// next request line, less the line end and blank lines before it. A
// request of a bodiless method, or one that asks to switch protocols
// (what follows may be another protocol), has none.
func (r *Reader) unframed(m *Message, body *prefix) error {
	if bodiless[m.Method] || m.Upgrade() {
		return nil
	}
	var pend []byte // line ends and blank lines not yet known to be body
	var pendN int64
	for {
		l, done, err := r.bodyLine()
		if done || err != nil {
			return err
		}
		if !l.long && isBlank(l.b) {
			if len(pend) < MaxBody {
				pend = append(append(pend, l.b...), l.end...)
			}
			pendN += int64(l.n)
			continue
		}
		if pendN > 0 {
			body.add(pend, pendN)
		}
		body.add(l.b, l.full)
		pend = append(pend[:0], l.end...)
		pendN = int64(len(l.end))
	}
}

// bodyLine returns the next line of a body that ends at the next request
// line: done at the end of input, or when the next line is a request line
// (left for the next message).
func (r *Reader) bodyLine() (l line, done bool, err error) {
	l, err = r.lr.next()
	if errors.Is(err, io.EOF) {
		return l, true, nil
	}
	if err != nil {
		return l, true, err
	}
	if !l.long && IsRequestLine(l.b) {
		r.lr.unread(l)
		return l, true, nil
	}
	return l, false, nil
}
