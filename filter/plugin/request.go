package plugin

import (
	"errors"
	"strconv"
	"strings"
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi"

	"github.com/meshward/meshward/internal/wordeq"
	"github.com/meshward/meshward/models"
)

// maxSource bounds a caller's identity. The headers the filter reads are
// bounded by the configuration (max_headers, max_header_bytes): a hostile
// request must not make the filter's work or memory grow without limit.
const maxSource = 256

// headerLimits bound what readRequest inspects of a request's headers.
type headerLimits struct{ count, bytes int }

// headerRead is what readRequest found beyond reading the request: a
// verdict header the client sent itself (forged), and the header bytes
// (names and values, :path included) past the limits, left uninspected.
type headerRead struct {
	forged      bool
	uninspected int
}

var errNoPath = errors.New("request has no :path")

// readRequest fills r from the current request's headers and connection.
// meshward's own verdict headers (which a client may forge) are not part of
// the request it judges.
// It reports whether the client sent a verdict header of its own.
//
// It is the filter's hot path, and allocation is what costs most in
// WebAssembly: the header map is fetched once and parsed in place (names and
// values are views of the host's buffer, which nothing writes to again), and
// r.Headers reuses its backing array from the previous request of a pooled
// context.
func readRequest(r *models.Request, bufs *hostBuffers, workload, scoreHeader string, lim headerLimits) (hr headerRead, err error) {
	buf, err := goabi.RequestHeaderPairs()
	if err != nil {
		return hr, err
	}
	bufs.keep(buf)
	r.Destination = workload
	if r.Headers == nil {
		r.Headers = make([]models.Header, 0, 16)
	}
	r.Headers = r.Headers[:0]
	havePath := false
	budget := lim.bytes
	it := &bufs.pairs
	it.Reset(buf)
	for it.Next() {
		name, value := bytesString(it.Name), bytesString(it.Value)
		// Names are compared by wordeq: Go's string comparison (a switch
		// over names too) is two calls and a byte loop in wasm.
		if len(name) > 0 && name[0] == ':' {
			switch {
			case wordeq.Equal(name, ":method"):
				r.Method = value
			case wordeq.Equal(name, ":path"):
				// The target counts in the header budget: a query past
				// it is not read.
				if len(value) > budget {
					hr.uninspected += len(value) - max(budget, 0)
					value = value[:max(budget, 0)]
				}
				budget -= len(value)
				r.Path, r.Query = models.SplitTarget(value)
				havePath = true
			}
			continue
		}
		if wordeq.Equal(name, scoreHeader) || wordeq.Equal(name, headerReason) {
			hr.forged = true
			continue
		}
		if wordeq.Equal(name, "content-length") {
			// What the client says it sends: a body beyond what the route
			// ever sent is judged before all of it arrives.
			r.RequestBytes, _ = strconv.ParseInt(value, 10, 64)
		}
		n := len(r.Headers)
		if n == lim.count || budget <= len(name) {
			hr.uninspected += len(name) + len(value)
			continue
		}
		budget -= len(name)
		if len(value) > budget {
			hr.uninspected += len(value) - budget
			value = value[:budget]
		}
		budget -= len(value)
		// Field by field: appending a 32-byte literal is a memory.copy
		// per header in wasm.
		if n < cap(r.Headers) {
			r.Headers = r.Headers[:n+1]
		} else {
			r.Headers = append(r.Headers, models.Header{})
		}
		h := &r.Headers[n]
		h.Name, h.Value = name, value
	}
	if !havePath {
		return hr, errNoPath
	}
	r.Source = sourceIdentity(bufs)
	return hr, nil
}

// hostBuffers are the host's buffers a stream's request views (header
// names and values, the caller's identity, the body), handed back to goabi
// for reuse when the stream is done: the filter then allocates next to
// nothing per request, and its garbage collector rarely runs.
type hostBuffers struct {
	b [4][]byte
	n int
	// pairs walks a header map (see goabi.Pairs.Reset).
	pairs goabi.Pairs
}

// keep records a buffer to release with the stream; beyond four, a buffer is
// left to the garbage collector.
func (k *hostBuffers) keep(b []byte) {
	if k.n < len(k.b) {
		k.b[k.n] = b
		k.n++
	}
}

// release hands every kept buffer back; nothing may view them afterwards.
func (k *hostBuffers) release() {
	for i := 0; i < k.n; i++ {
		goabi.Release(k.b[i])
		k.b[i] = nil
	}
	k.n = 0
}

// sourceIdentity names the caller from what Envoy itself establishes,
// never from a header a client can send:
//   - the peer certificate's URI SAN (connection.uri_san_peer_certificate:
//     set only on a TLS connection whose client certificate Envoy verified;
//     a SPIFFE ID in a mesh);
//   - else Istio's peer metadata in filter state (downstream_peer), but only
//     on an mTLS connection (connection.mtls): without mTLS Istio may have
//     taken it from x-envoy-peer-metadata headers the client sent;
//   - else the source address without its port (source.address: the TCP
//     peer, which a header cannot change);
//   - else models.UnknownSource, which the model has never seen as a caller
//     (the request is scored as a new caller and counted in
//     meshward_unidentified_total).
func sourceIdentity(bufs *hostBuffers) string {
	if san, err := goabi.Property(pathURISAN); err == nil && len(san) > 0 {
		bufs.keep(san)
		return bound(bytesString(san))
	}
	if mtls, err := goabi.Property(pathMTLS); err == nil {
		verified := len(mtls) == 1 && mtls[0] == 1
		goabi.Release(mtls)
		if verified {
			if wl, err := goabi.Property(pathPeerWorkload); err == nil && len(wl) > 0 {
				bufs.keep(wl)
				if ns, err := goabi.Property(pathPeerNamespace); err == nil && len(ns) > 0 {
					defer goabi.Release(ns)
					return bound(bytesString(wl) + "." + bytesString(ns))
				}
				return bound(bytesString(wl))
			}
		}
	}
	if addr, err := goabi.Property(pathSourceAddress); err == nil && len(addr) > 0 {
		bufs.keep(addr)
		return bound(stripPort(bytesString(addr)))
	}
	return models.UnknownSource
}

// Property paths of the caller's identity, serialized once (segments joined
// by NUL): the peer certificate's URI SAN, whether the connection is mTLS,
// Istio's peer metadata, the source address. proxywasm.GetProperty would
// serialize (and allocate) a path on every request.
var (
	pathURISAN        = []byte("connection\x00uri_san_peer_certificate")
	pathMTLS          = []byte("connection\x00mtls")
	pathPeerWorkload  = []byte("filter_state\x00downstream_peer\x00workload")
	pathPeerNamespace = []byte("filter_state\x00downstream_peer\x00namespace")
	pathSourceAddress = []byte("source\x00address")
)

// bytesString views a buffer the host handed over as a string without
// copying it, as the SDK does for headers: the buffer is fresh for this call
// and nothing writes to it again.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func bound(s string) string {
	if len(s) > maxSource {
		return s[:maxSource]
	}
	return s
}

// stripPort turns "10.0.0.1:5000" into "10.0.0.1" and "[::1]:5000" into "::1".
func stripPort(addr string) string {
	if strings.HasPrefix(addr, "[") {
		if i := strings.IndexByte(addr, ']'); i > 0 {
			return addr[1:i]
		}
		return addr
	}
	if i := strings.LastIndexByte(addr, ':'); i > 0 && strings.Count(addr, ":") == 1 {
		return addr[:i]
	}
	return addr
}
