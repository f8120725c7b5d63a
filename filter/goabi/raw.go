package goabi

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/internal"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// Raw host calls for a plugin's hot path. proxywasm's own wrappers allocate
// on every call (a serialized property path, a [][2]string of headers);
// compiled to WebAssembly each allocation costs more than the host call
// itself. These return the host's buffer as it is, for the caller to parse
// in place. They work on every platform: on wasip1 through the real ABI, in
// native tests through the SDK's emulator.

// RequestHeaderPairs returns the current request's headers as the ABI
// serializes them (see ParsePairs), fetched with one
// proxy_get_header_map_pairs call. The buffer is fresh and the caller's.
func RequestHeaderPairs() ([]byte, error) {
	return headerPairs(internal.MapTypeHttpRequestHeaders)
}

// ResponseHeaderPairs is RequestHeaderPairs for the response headers.
func ResponseHeaderPairs() ([]byte, error) {
	return headerPairs(internal.MapTypeHttpResponseHeaders)
}

func headerPairs(t internal.MapType) ([]byte, error) {
	return result(rawHeaderPairs(t))
}

// Property is proxywasm.GetProperty for a path already serialized (its
// segments joined by NUL bytes), so a constant path costs no allocation.
// The returned buffer is fresh and the caller's.
func Property(serializedPath []byte) ([]byte, error) {
	if len(serializedPath) == 0 {
		return nil, types.ErrorStatusBadArgument
	}
	return result(rawProperty(serializedPath))
}

// RequestBody is proxywasm.GetHttpRequestBody without the SDK's per-call
// allocations. The returned buffer is fresh and the caller's.
func RequestBody(start, maxSize int) ([]byte, error) {
	return result(rawBuffer(internal.BufferTypeHttpRequestBody, start, maxSize))
}

// ReplaceRequestHeader is proxywasm.ReplaceHttpRequestHeader in one call:
// the SDK's wrapper goes through three layers of calls and an interface
// before the host call, which compiled to WebAssembly cost about as much as
// the guest's side of the call itself.
func ReplaceRequestHeader(name, value string) error {
	return status(rawReplaceHeader(internal.MapTypeHttpRequestHeaders, name, value))
}

// RecordMetric is proxywasm's MetricHistogram.Record (and a gauge's Record)
// in one call, for the same reason: id is the metric as the SDK defined it
// (its MetricHistogram or MetricGauge value).
func RecordMetric(id uint32, value uint64) error {
	return status(rawRecordMetric(id, value))
}

func status(st internal.Status) error {
	if st != internal.StatusOK {
		return internal.StatusToError(st)
	}
	return nil
}

func result(b []byte, st internal.Status) ([]byte, error) {
	if err := status(st); err != nil {
		return nil, err
	}
	if b == nil {
		return nil, types.ErrorStatusNotFound
	}
	return b, nil
}

// Pairs walks a serialized header map without copying: each Next makes
// Name and Value views of the buffer, in order. The layout is a
// little-endian u32 count, count pairs of u32 name and value sizes, then each
// name and value followed by a NUL byte. A buffer that does not follow it
// (truncated, or sizes pointing past its end) ends the walk after the pairs
// that were whole and sets Malformed; nothing panics.
type Pairs struct {
	Name, Value []byte
	// Malformed is set when the walk stopped at a pair that did not fit.
	Malformed bool

	buf         []byte
	left, sizes int
	data        int
}

// NewPairs starts a walk over buf.
func NewPairs(buf []byte) Pairs {
	var p Pairs
	p.Reset(buf)
	return p
}

// Reset starts a walk over buf with p, setting every field. A walker the
// caller keeps saves building and copying a Pairs per walk, which in wasm
// is a memory.fill and a memory.copy.
func (p *Pairs) Reset(buf []byte) {
	p.Name, p.Value, p.Malformed = nil, nil, false
	p.buf, p.left, p.sizes, p.data = buf, 0, 0, 0
	if len(buf) < 4 {
		p.Malformed = len(buf) != 0
		return
	}
	n := int(le32(buf))
	if n < 0 || n > (len(buf)-4)/8 {
		p.Malformed = true
		return
	}
	p.left, p.sizes, p.data = n, 4, 4+8*n
}

// Next moves to the next pair; false when there is none.
func (p *Pairs) Next() bool {
	if p.left == 0 {
		return false
	}
	b := p.buf
	ks, vs := int(le32(b[p.sizes:])), int(le32(b[p.sizes+4:]))
	d := p.data
	if ks < 0 || vs < 0 || ks > len(b)-d-1 || vs > len(b)-d-ks-2 {
		p.left, p.Malformed = 0, true
		return false
	}
	p.Name = b[d : d+ks : d+ks]
	d += ks + 1
	p.Value = b[d : d+vs : d+vs]
	p.data = d + vs + 1
	p.sizes += 8
	p.left--
	return true
}

func le32(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// Release hands back a buffer one of these calls returned, for the next host
// call to reuse instead of allocating: in WebAssembly, allocation (and the
// garbage collection it brings) is a plugin's main cost. Nothing may read the
// buffer, or any string viewing it, afterwards. Releasing is optional; a
// buffer never released is collected as usual. Off wasip1 it does nothing.
func Release(buf []byte) { release1(buf) }
