package source

import (
	"strings"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source/internal/http1"
)

// requestFrom fills q from an HTTP/1 request: the one mapping the raw and
// the pcap source share, so the same bytes make the same request in both.
func requestFrom(q *models.Request, m *http1.Message) {
	q.Method = m.Method
	q.Path, q.Query = http1.SplitTarget(m.Target)
	q.Headers = m.Headers
	q.Body = m.Body
	q.RequestBytes = m.BodyLen
}

// originForm returns the path and query of a URL a log recorded (a HAR
// entry's, a span's http.url): unlike a request target on the wire, any
// scheme is a URL there (a browser logs ws:// too). An origin-form target
// is returned as it is, anything else whole; the fragment is dropped.
func originForm(u string) string {
	if i := strings.IndexByte(u, '#'); i >= 0 {
		u = u[:i]
	}
	if strings.HasPrefix(u, "/") {
		return u
	}
	i := strings.Index(u, "://")
	if i <= 0 || strings.ContainsAny(u[:i], "/?") {
		return u
	}
	rest := u[i+3:]
	k := strings.IndexAny(rest, "/?")
	if k < 0 {
		return "/"
	}
	if rest[k] == '?' {
		return "/" + rest[k:]
	}
	return rest[k:]
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// clip shortens b for an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return append(b[:64:64], "…"...)
	}
	return b
}
