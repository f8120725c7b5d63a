package http1

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/meshward/meshward/models"
)

// IsRequestLine reports whether line is a request line in the strict form
// "METHOD SP target SP HTTP/d.d": a token of at most 32 bytes, one space, a
// target without white space or control bytes, one space, a version. It
// is the check that says where a request starts when the reader looks for
// one (after a malformed stretch, at the end of a body without framing, in
// a header section): the lenient forms a request line may take where a
// request is expected (parseRequestLine) would find requests in ordinary
// text there.
func IsRequestLine(line []byte) bool {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || sp > 32 || !isToken(line[:sp]) {
		return false
	}
	rest := line[sp+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 || !isVersion(rest[sp2+1:]) {
		return false
	}
	for _, c := range rest[:sp2] {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// IsStatusLine reports whether line is "HTTP/d.d SP 3DIGIT [SP reason]".
func IsStatusLine(line []byte) bool {
	return len(line) >= 12 && isVersion(line[:8]) && line[8] == ' ' &&
		isDigit(line[9]) && isDigit(line[10]) && isDigit(line[11]) && (len(line) == 12 || line[12] == ' ')
}

// knownMethods are the methods that make a line without a version a
// request (HTTP/0.9) at the start of a stream.
var knownMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true, "CONNECT": true,
	"OPTIONS": true, "TRACE": true, "PATCH": true, "PROPFIND": true, "PROPPATCH": true,
	"MKCOL": true, "COPY": true, "MOVE": true, "LOCK": true, "UNLOCK": true,
}

// StartsRequest reports whether b starts like an HTTP request: a request
// line, or a known method alone or with a target (HTTP/0.9; an unknown
// method of capital letters counts with a target starting with "/"). It
// tells a TCP connection's client side by its first bytes.
func StartsRequest(b []byte) bool {
	line := FirstLine(b)
	if IsRequestLine(line) {
		return true
	}
	f := bytes.Fields(line)
	if len(f) == 0 || len(f) > 2 || len(line) > len(f[0]) && line[len(f[0])] != ' ' {
		return false
	}
	if knownMethods[string(f[0])] {
		return true
	}
	for _, c := range f[0] {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return len(f) == 2 && f[1][0] == '/'
}

// IndexRequestLine returns the offset of the first line of b that
// IsRequestLine, or -1.
func IndexRequestLine(b []byte) int {
	for i := 0; i < len(b); {
		l, next := lineAt(b, i)
		if IsRequestLine(l) {
			return i
		}
		i = next
	}
	return -1
}

// FirstLine returns the first line of b that is not empty, without its
// line end.
func FirstLine(b []byte) []byte {
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++
	}
	l, _ := lineAt(b, i)
	return l
}

// lineAt returns the line at b[i] without its line end, and the offset
// after it.
func lineAt(b []byte, i int) ([]byte, int) {
	k := bytes.IndexByte(b[i:], '\n')
	if k < 0 {
		return bytes.TrimSuffix(b[i:], []byte("\r")), len(b)
	}
	return bytes.TrimSuffix(b[i:i+k], []byte("\r")), i + k + 1
}

// parseRequestLine reads a request line where a request is expected. It
// takes what servers answer: words separated by any run of white space
// (RFC 9112 §3 allows a recipient that), a target with white space in it
// (joined by single spaces; a warning), a malformed version after a target
// (a warning), and no version at all (HTTP/0.9). It refuses a method that
// is not a token, a line with no target, a target with control bytes, and
// an absolute-form target of a scheme other than http or https (Envoy
// answers those 400 before any filter sees them).
func parseRequestLine(line []byte) (method, target, proto string, warn, err error) {
	f := fields(line)
	if len(f) == 0 || !isToken(f[0]) {
		return "", "", "", nil, fmt.Errorf("%w: %q", ErrStartLine, clip(line))
	}
	method = string(f[0])
	switch last := f[len(f)-1]; {
	case len(f) == 1 && knownMethods[method] || len(f) == 2 && isVersion(last):
		return "", "", "", nil, fmt.Errorf("%w: %q", ErrNoURI, clip(line))
	case len(f) >= 3 && isVersion(last):
		proto = string(last)
		target = string(bytes.Join(f[1:len(f)-1], []byte(" ")))
		if len(f) > 3 {
			warn = fmt.Errorf("%w, kept: white space in the target of %q", ErrStartLine, clip(line))
		}
	case len(f) == 3 && bytes.HasPrefix(last, []byte("HTTP/")):
		// "GET / HTTP/1." and the like: servers answer these; keep them.
		proto, target = string(last), string(f[1])
		warn = fmt.Errorf("%w, kept: bad HTTP version in %q", ErrStartLine, clip(line))
	case len(f) == 2:
		proto, target = "HTTP/0.9", string(f[1])
	default:
		return "", "", "", nil, fmt.Errorf("%w: %q", ErrStartLine, clip(line))
	}
	for _, c := range []byte(target) {
		if c < ' ' || c == 0x7f {
			return "", "", "", nil, fmt.Errorf("%w: control byte %#x in the target of %q", ErrStartLine, c, clip(line))
		}
	}
	if scheme, _, ok := cutScheme(target); ok && !isHTTPScheme(scheme) {
		return "", "", "", nil, fmt.Errorf("%w: target of scheme %q (only http and https are served) in %q", ErrStartLine, scheme, clip(line))
	}
	return method, target, proto, warn, nil
}

// SplitTarget turns a request target into the path and query a server
// routes on, the one normalisation both the raw and the pcap source apply:
//   - a fragment ("#…") is dropped: clients never send one, and Envoy
//     refuses or strips it before a filter sees the path;
//   - the absolute form ("http://host/p?q", scheme http or https in any
//     case) becomes its path and query, "/" when it has no path, as an
//     origin server reads it (RFC 9112 §3.2.2);
//   - the origin form, "*" and the authority form of CONNECT stay as they
//     are.
func SplitTarget(target string) (path, query string) {
	if i := strings.IndexByte(target, '#'); i >= 0 {
		target = target[:i]
	}
	if scheme, rest, ok := cutScheme(target); ok && isHTTPScheme(scheme) {
		k := strings.IndexAny(rest, "/?")
		switch {
		case k < 0:
			target = "/"
		case rest[k] == '?':
			target = "/" + rest[k:]
		default:
			target = rest[k:]
		}
	}
	return models.SplitTarget(target)
}

// cutScheme splits "scheme://rest" when target starts with a scheme
// (RFC 3986: a letter, then letters, digits, "+", "-" or ".").
func cutScheme(target string) (scheme, rest string, ok bool) {
	i := strings.Index(target, "://")
	if i <= 0 {
		return "", "", false
	}
	for k := 0; k < i; k++ {
		c := target[k]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case k > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return "", "", false
		}
	}
	return target[:i], target[i+3:], true
}

func isHTTPScheme(s string) bool {
	return strings.EqualFold(s, "http") || strings.EqualFold(s, "https")
}

// fields splits a line at runs of the white space RFC 9112 §3 lets a
// recipient treat as a separator: SP, HTAB, VT, FF and a bare CR.
func fields(line []byte) [][]byte {
	var f [][]byte
	start := -1
	for i, c := range line {
		if c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r' {
			if start >= 0 {
				f = append(f, line[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		f = append(f, line[start:])
	}
	return f
}

func isVersion(b []byte) bool {
	return len(b) == 8 && string(b[:5]) == "HTTP/" && isDigit(b[5]) && b[6] == '.' && isDigit(b[7])
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isBlank reports whether a line holds nothing but SP, HTAB and CR.
func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// looksLikeHeader reports whether line starts with a field name and colon.
func looksLikeHeader(line []byte) bool {
	c := bytes.IndexByte(line, ':')
	return c > 0 && isToken(bytes.TrimRight(line[:c], " \t"))
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

// trimOWS trims the optional white space (SP, HTAB) around a field value.
func trimOWS(b []byte) []byte { return bytes.Trim(b, " \t") }

// clip shortens b for a message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return append(b[:64:64], "…"...)
	}
	return b
}
