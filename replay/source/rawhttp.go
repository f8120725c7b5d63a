package source

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/meshward/meshward/models"
)

// Bounds of one raw HTTP request.
const (
	// MaxRawLine bounds a request line or a header line.
	MaxRawLine = 64 << 10
	// MaxRawHeader bounds the header section of a request.
	MaxRawHeader = 1 << 20
	// MaxRawHeaders bounds the number of header fields of a request.
	MaxRawHeaders = 1000
)

// ReadRawHTTP reads raw HTTP/1.x requests written one after another (the
// way CSIC-2010 and similar datasets ship them), calling emit for each good
// one and bad for each malformed stretch of input, which is skipped up to
// the next line that looks like a request line ("METHOD SP target SP
// HTTP/x.y"). It stops early only when emit returns an error or the reader
// fails. Gzip-compressed input is decompressed transparently.
//
// It is lenient: blank lines may separate requests, lines may end in CRLF
// or LF, an absolute-URI target keeps its path and query, a body is framed
// by Transfer-Encoding: chunked or Content-Length, and a body without either
// runs up to the next request line (less the blank lines before it).
// Records have no labels (Overrides.Label sets them); RequestBytes is the
// length of the whole body. Pos is "name:offset N", the byte offset of the
// request line in the (decompressed) input.
func ReadRawHTTP(r io.Reader, name string, o Overrides, emit func(*Record) error, bad func(Problem)) error {
	in, err := gunzipMaybe(r)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	p := &rawParser{lr: lineReader{br: in}}
	pos := func(off int64) string { return name + ":offset " + strconv.FormatInt(off, 10) }
	fail := func(err error) error { return fmt.Errorf("%s:offset %d: %w", name, p.lr.off, err) }
	first := true
	for {
		l, err := p.lr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fail(err)
		}
		if first {
			l.b = bytes.TrimPrefix(l.b, []byte("\xef\xbb\xbf"))
			first = false
		}
		if isBlank(l.b) {
			continue
		}
		if l.long || !looksLikeRequestLine(l.b) {
			bad(Problem{Pos: pos(l.off), Err: fmt.Errorf("not a request line: %q", clip(l.b))})
			if err := p.resync(); err != nil {
				return fail(err)
			}
			continue
		}
		rec, perr := p.request(l)
		if perr != nil {
			var re readError
			if errors.As(perr, &re) {
				return fail(re.error)
			}
			bad(Problem{Pos: pos(l.off), Err: perr})
			if err := p.resync(); err != nil {
				return fail(err)
			}
			continue
		}
		rec.Pos = pos(l.off)
		o.Apply(rec)
		if err := emit(rec); err != nil {
			return err
		}
	}
}

// readError is a failure of the underlying reader, which ends reading.
type readError struct{ error }

func (e readError) Unwrap() error { return e.error }

type rawParser struct {
	lr lineReader
}

// resync skips lines up to (not including) the next request line.
func (p *rawParser) resync() error {
	for {
		l, err := p.lr.nextBody()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !l.long && looksLikeRequestLine(l.b) {
			p.lr.unread(l)
			return nil
		}
	}
}

// request parses one request whose request line is l.
func (p *rawParser) request(l rawLine) (*Record, error) {
	method, target, _ := splitRequestLine(l.b)
	rec := &Record{}
	req := &rec.Request
	req.Method = method
	req.Path, req.Query = models.SplitTarget(originForm(target))

	// Header fields, with obsolete line folding.
	var (
		hdrBytes int
		cl       int64 = -1
		chunked  bool
	)
headers:
	for {
		h, err := p.lr.next()
		if errors.Is(err, io.EOF) {
			break // headers ending at the end of input: accepted
		}
		if err != nil {
			return nil, readError{err}
		}
		if h.long {
			return nil, fmt.Errorf("header line at offset %d longer than %d bytes", h.off, MaxRawLine)
		}
		hdrBytes += h.n
		if hdrBytes > MaxRawHeader {
			return nil, fmt.Errorf("header section longer than %d bytes", MaxRawHeader)
		}
		switch {
		case isBlank(h.b):
			break headers
		case (h.b[0] == ' ' || h.b[0] == '\t') && len(req.Headers) > 0:
			last := &req.Headers[len(req.Headers)-1]
			last.Value = strings.TrimSpace(last.Value + " " + strings.TrimSpace(string(h.b)))
			continue
		case looksLikeRequestLine(h.b):
			// The next request, with no blank line before it: no body.
			p.lr.unread(h)
			req.RequestBytes = 0
			return rec, nil
		}
		colon := bytes.IndexByte(h.b, ':')
		if colon <= 0 {
			return nil, fmt.Errorf("header line at offset %d has no field name and colon: %q", h.off, clip(h.b))
		}
		nameB := bytes.TrimRight(h.b[:colon], " \t")
		if !isToken(nameB) {
			return nil, fmt.Errorf("header line at offset %d: bad field name %q", h.off, clip(h.b[:colon]))
		}
		if len(req.Headers) >= MaxRawHeaders {
			return nil, fmt.Errorf("more than %d header fields", MaxRawHeaders)
		}
		hn := lowerASCII(nameB)
		hv := string(bytes.Trim(h.b[colon+1:], " \t"))
		req.Headers = append(req.Headers, models.Header{Name: hn, Value: hv})
		switch hn {
		case "content-length":
			n, err := strconv.ParseInt(hv, 10, 64)
			if err != nil || n < 0 || hv[0] == '+' {
				return nil, fmt.Errorf("Content-Length %q is not a non-negative integer", clip([]byte(hv)))
			}
			if cl >= 0 && cl != n {
				return nil, fmt.Errorf("conflicting Content-Length values %d and %d", cl, n)
			}
			cl = n
		case "transfer-encoding":
			codings := strings.Split(hv, ",")
			chunked = strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked")
		}
	}

	var body bodyPrefix
	var err error
	switch {
	case chunked:
		err = p.chunkedBody(&body)
	case cl >= 0:
		err = p.lr.readN(cl, &body)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("body truncated: Content-Length %d, input ends after %d bytes", cl, body.n)
		}
	default:
		err = p.unframedBody(&body)
	}
	if err != nil {
		return nil, err
	}
	if body.n > 0 {
		req.Body = body.b
	}
	req.RequestBytes = body.n
	return rec, nil
}

// chunkedBody reads a chunked body and its trailer section.
func (p *rawParser) chunkedBody(body *bodyPrefix) error {
	for {
		l, err := p.lr.next()
		if errors.Is(err, io.EOF) {
			return errors.New("chunked body truncated: no last chunk")
		}
		if err != nil {
			return readError{err}
		}
		if l.long {
			return fmt.Errorf("chunk size line at offset %d too long", l.off)
		}
		sz := l.b
		if i := bytes.IndexByte(sz, ';'); i >= 0 {
			sz = sz[:i]
		}
		sz = bytes.Trim(sz, " \t")
		n, err := strconv.ParseUint(string(sz), 16, 62)
		if err != nil {
			return fmt.Errorf("bad chunk size %q at offset %d", clip(l.b), l.off)
		}
		if n == 0 {
			break
		}
		if err := p.lr.readN(int64(n), body); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("chunk at offset %d truncated", l.off)
			}
			return err
		}
		// The CRLF (or LF) after the chunk data.
		e, err := p.lr.next()
		if err != nil && !errors.Is(err, io.EOF) {
			return readError{err}
		}
		if err != nil || len(e.b) != 0 {
			return fmt.Errorf("chunk at offset %d: data not followed by a line end", l.off)
		}
	}
	// Trailer fields up to a blank line (or the end of input).
	for {
		l, err := p.lr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return readError{err}
		}
		if isBlank(l.b) {
			return nil
		}
		if looksLikeRequestLine(l.b) {
			p.lr.unread(l)
			return nil
		}
	}
}

// unframedBody reads a body that has neither Content-Length nor chunked
// framing: everything up to the next request line, less the line end and
// blank lines before it.
func (p *rawParser) unframedBody(body *bodyPrefix) error {
	var pend []byte // line ends and blank lines not yet known to be body
	var pendN int64
	for {
		l, err := p.lr.nextBody()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return readError{err}
		}
		if !l.long && looksLikeRequestLine(l.b) {
			p.lr.unread(l)
			return nil
		}
		if isBlank(l.b) && !l.long {
			if len(pend) < models.MaxBodyPrefix {
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

// bodyPrefix collects the first MaxBodyPrefix bytes of a body and counts
// all of them.
type bodyPrefix struct {
	b []byte
	n int64
}

// add appends b, the first bytes of n, to the body.
func (bp *bodyPrefix) add(b []byte, n int64) {
	if room := models.MaxBodyPrefix - len(bp.b); room > 0 {
		if len(b) > room {
			b = b[:room]
		}
		bp.b = append(bp.b, b...)
	}
	bp.n += n
}

// rawLine is one line of input.
type rawLine struct {
	off  int64  // offset of its first byte
	b    []byte // content without the line end, at most the reader's limit
	end  string // the line end: "\r\n", "\n" or "" at the end of input
	n    int    // bytes consumed, line end included
	full int64  // length of the content without the line end
	long bool   // content longer than the limit
}

// lineReader reads lines with their offsets and one line of push-back.
type lineReader struct {
	br      *bufio.Reader
	off     int64 // offset of the next byte of br
	pend    *rawLine
	pendBuf []byte
	buf     []byte
}

// unread pushes l back; the next call of next or nextBody returns it.
func (lr *lineReader) unread(l rawLine) {
	lr.pendBuf = append(lr.pendBuf[:0], l.b...)
	l.b = lr.pendBuf
	lr.pend = &l
}

// next returns the next line, at most MaxRawLine bytes of it; its bytes are
// valid until the next call.
func (lr *lineReader) next() (rawLine, error) { return lr.line(MaxRawLine) }

// nextBody is next for body lines, which may be of any length: only the
// first MaxBodyPrefix bytes are kept.
func (lr *lineReader) nextBody() (rawLine, error) { return lr.line(models.MaxBodyPrefix) }

func (lr *lineReader) line(limit int) (rawLine, error) {
	if lr.pend != nil {
		l := *lr.pend
		lr.pend = nil
		if l.long || len(l.b) > limit {
			l.long = true
			l.b = l.b[:min(len(l.b), limit)]
		}
		return l, nil
	}
	l := rawLine{off: lr.off}
	lr.buf = lr.buf[:0]
	var total int64
	var last2 [2]byte
	for {
		frag, err := lr.br.ReadSlice('\n')
		total += int64(len(frag))
		if room := limit + 2 - len(lr.buf); room > 0 {
			lr.buf = append(lr.buf, frag[:min(len(frag), room)]...)
		}
		for _, c := range frag[max(0, len(frag)-2):] {
			last2[0], last2[1] = last2[1], c
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		lr.off += total
		if err != nil && (total == 0 || !errors.Is(err, io.EOF)) {
			return l, err
		}
		break
	}
	switch {
	case total >= 2 && last2 == [2]byte{'\r', '\n'}:
		l.end = "\r\n"
	case total >= 1 && last2[1] == '\n':
		l.end = "\n"
	}
	l.n = int(total)
	l.full = total - int64(len(l.end))
	b := lr.buf[:min(int64(len(lr.buf)), l.full)]
	l.long = l.full > int64(limit)
	l.b = b[:min(len(b), limit)]
	return l, nil
}

// readN reads an n-byte block into body.
func (lr *lineReader) readN(n int64, body *bodyPrefix) error {
	if lr.pend != nil {
		return errors.New("internal error: block read after a pushed-back line")
	}
	for n > 0 {
		want := min(n, 32<<10)
		if buffered := int64(lr.br.Buffered()); buffered > 0 {
			want = min(want, buffered)
		}
		b, err := lr.br.Peek(int(want))
		if len(b) > 0 {
			body.add(b, int64(len(b)))
			lr.br.Discard(len(b))
			lr.off += int64(len(b))
			n -= int64(len(b))
		}
		if err != nil && n > 0 {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return readError{err}
		}
	}
	return nil
}

// looksLikeRequestLine reports whether b is "METHOD SP target SP HTTP/x.y".
func looksLikeRequestLine(b []byte) bool {
	_, _, ok := splitRequestLine(b)
	return ok
}

func splitRequestLine(b []byte) (method, target string, ok bool) {
	sp1 := bytes.IndexByte(b, ' ')
	if sp1 <= 0 || sp1 > 32 || !isToken(b[:sp1]) {
		return "", "", false
	}
	rest := b[sp1+1:]
	sp2 := bytes.LastIndexByte(rest, ' ')
	if sp2 <= 0 {
		return "", "", false
	}
	t, v := rest[:sp2], rest[sp2+1:]
	if len(v) != 8 || string(v[:5]) != "HTTP/" || !isDigit(v[5]) || v[6] != '.' || !isDigit(v[7]) {
		return "", "", false
	}
	for _, c := range t {
		if c <= ' ' || c == 0x7f {
			return "", "", false
		}
	}
	return string(b[:sp1]), string(t), true
}

// originForm turns an absolute-URI request target into path and query; other
// forms are returned as they are.
func originForm(target string) string {
	if strings.HasPrefix(target, "/") {
		return target
	}
	i := strings.Index(target, "://")
	if i <= 0 || strings.ContainsAny(target[:i], "/?") {
		return target
	}
	rest := target[i+3:]
	k := strings.IndexAny(rest, "/?#")
	if k < 0 {
		return "/"
	}
	rest = rest[k:]
	if j := strings.IndexByte(rest, '#'); j >= 0 {
		rest = rest[:j]
	}
	if rest == "" || rest[0] == '?' {
		rest = "/" + rest
	}
	return rest
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// isToken reports whether b is an RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func lowerASCII(b []byte) string {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			return strings.ToLower(string(b))
		}
	}
	return string(b)
}

// clip shortens b for an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return append(b[:64:64], "…"...)
	}
	return b
}
