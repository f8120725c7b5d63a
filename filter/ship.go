package main

import (
	"strconv"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/meshward/meshward/models"
)

// Shipping records to the collector. Each stream's record is encoded when
// the stream ends (so the response's status and size are in it) if it was
// flagged or falls in the sampled share; records wait in a bounded buffer;
// every tick one batch goes to the collector's cluster with DispatchHttpCall.
// What does not fit the buffer is dropped and counted; a batch the collector
// pushes back (503, or no answer) is kept and retried after a pause.
//
// No raw body leaves the sidecar, and query values travel as their shape
// (each byte replaced by a representative of its character class, length
// kept): enough for the trainer's class-transition and length models, not
// the values themselves.

// Metric names of shipping.
const (
	MetricShipped = "meshward_records_shipped_total"
	MetricDropped = "meshward_records_dropped_total"
)

// collectorPath is the collector's batch endpoint.
const collectorPath = "/v1/records"

// shipper is the per-plugin record buffer.
type shipper struct {
	buf      [][]byte
	inFlight int // records in the batch being sent; 0 when none
	pause    int // ticks to wait before the next batch
	rng      uint64
}

// sample reports whether an unflagged record falls in the shipped share.
func (s *shipper) sample(rate float64) bool {
	if rate >= 1 {
		return true
	}
	// xorshift64*: deterministic per VM, cheap, no allocation.
	if s.rng == 0 {
		s.rng = 0x9E3779B97F4A7C15
	}
	s.rng ^= s.rng >> 12
	s.rng ^= s.rng << 25
	s.rng ^= s.rng >> 27
	return float64((s.rng*0x2545F4914F6CDD1D)>>11)/(1<<53) < rate
}

// enqueue encodes one stream's record, or counts it dropped when the buffer
// is full.
func (p *pluginContext) enqueue(h *httpContext) {
	s := p.settings
	if s.CollectorCluster == "" || !h.scored && !h.learned {
		return
	}
	v := &h.verdict
	flagged := h.scored && v.Score > s.Threshold
	if !flagged && !p.ship.sample(s.SampleRate) {
		return
	}
	if len(p.ship.buf) >= s.MaxBuffer {
		p.metrics.dropped.Increment(1)
		return
	}
	p.ship.buf = append(p.ship.buf, encodeRecord(&h.req, v.Score, flagged))
}

// sendBatch dispatches the next batch, if any and none is in flight.
func (p *pluginContext) sendBatch() {
	s := p.settings
	if s == nil || s.CollectorCluster == "" || p.ship.inFlight > 0 || len(p.ship.buf) == 0 {
		return
	}
	if p.ship.pause > 0 {
		p.ship.pause--
		return
	}
	n := min(len(p.ship.buf), s.BatchSize)
	size := 0
	for _, r := range p.ship.buf[:n] {
		size += len(r) + 1
	}
	body := make([]byte, 0, size)
	for _, r := range p.ship.buf[:n] {
		body = append(body, r...)
		body = append(body, '\n')
	}
	headers := [][2]string{
		{":method", "POST"}, {":path", collectorPath}, {":authority", "meshward-collector"},
		{"content-type", "application/x-ndjson"}, {"authorization", "Bearer " + s.CollectorToken},
	}
	if _, err := proxywasm.DispatchHttpCall(s.CollectorCluster, headers, body, nil, s.CollectorTimeoutMS, p.onBatchAnswer); err != nil {
		proxywasm.LogWarnf("meshward: cannot reach the collector cluster %s: %v", s.CollectorCluster, err)
		p.ship.pause = backoffTicks
		return
	}
	p.ship.inFlight = n
}

// backoffTicks is how many ticks shipping pauses after a push-back.
const backoffTicks = 5

// onBatchAnswer drops the records the collector took (200) or refused as
// invalid (400: resending them would not help), and keeps the batch for a
// later retry otherwise.
func (p *pluginContext) onBatchAnswer(numHeaders, bodySize, numTrailers int) {
	n := p.ship.inFlight
	p.ship.inFlight = 0
	status := ""
	if hs, err := proxywasm.GetHttpCallResponseHeaders(); err == nil {
		for _, h := range hs {
			if h[0] == ":status" {
				status = h[1]
			}
		}
	}
	switch status {
	case "200", "400":
		p.metrics.shipped.Increment(uint64(n))
		p.ship.buf = p.ship.buf[n:]
		if status == "400" {
			proxywasm.LogWarnf("meshward: the collector refused records of a batch (%d bytes of explanation)", bodySize)
		}
	default:
		p.ship.pause = backoffTicks
	}
}

// encodeRecord writes one record as the collector's JSON line (store.Record).
func encodeRecord(r *models.Request, score float64, flagged bool) []byte {
	// Cheap encodings: time and floats are formatted without the time and
	// strconv float code, which is slow compiled to WebAssembly.
	route := models.Template(r.Path)
	b := make([]byte, 0, 256)
	b = append(b, `{"ts_ns":`...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, `,"route":`...)
	b = strconv.AppendQuote(b, route)
	b = append(b, `,"score":`...)
	b = appendFixed4(b, score)
	b = append(b, `,"flagged":`...)
	b = strconv.AppendBool(b, flagged)
	b = append(b, `,"request":{"Method":`...)
	b = strconv.AppendQuote(b, r.Method)
	b = append(b, `,"Path":`...)
	b = strconv.AppendQuote(b, route)
	b = append(b, `,"Query":`...)
	b = strconv.AppendQuote(b, shapeQuery(r.Query))
	b = append(b, `,"Source":`...)
	b = strconv.AppendQuote(b, r.Source)
	b = append(b, `,"Destination":`...)
	b = strconv.AppendQuote(b, r.Destination)
	b = append(b, `,"Status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"RequestBytes":`...)
	b = strconv.AppendInt(b, max(r.RequestBytes, int64(len(r.Body))), 10)
	b = append(b, `,"ResponseBytes":`...)
	b = strconv.AppendInt(b, r.ResponseBytes, 10)
	b = append(b, `,"Headers":[`...)
	n := 0
	for _, h := range r.Headers {
		if models.SkipHeader(h.Name) || n == maxShippedHeaders {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `{"Name":`...)
		b = strconv.AppendQuote(b, h.Name)
		b = append(b, `,"Value":`...)
		b = strconv.AppendQuote(b, shapeValue(h.Value))
		b = append(b, '}')
	}
	return append(b, "]}}"...)
}

// maxShippedHeaders bounds the headers a record carries.
const maxShippedHeaders = 16

// shapeValue replaces each byte of a header value by its class's
// representative, up to models.MaxValueBytes (what the model examines), so
// the trainer learns lengths and transitions, not values.
func shapeValue(v string) string {
	n := min(len(v), models.MaxValueBytes)
	out := make([]byte, n)
	for i := 0; i < n; i++ {
		out[i] = classRepresentative[models.ClassOf(v[i])]
	}
	return string(out)
}

// appendFixed4 writes x in [0,1] with four decimals.
func appendFixed4(b []byte, x float64) []byte {
	n := int64(x*10000 + 0.5)
	if n >= 10000 {
		return append(b, "1.0000"...)
	}
	if n < 0 {
		n = 0
	}
	return append(b, '0', '.', byte('0'+n/1000), byte('0'+n/100%10), byte('0'+n/10%10), byte('0'+n%10))
}

// classRepresentative is the byte each character class is shipped as.
var classRepresentative = [models.NClasses]byte{
	models.ClassLower: 'a', models.ClassUpper: 'A', models.ClassDigit: '0', models.ClassSpace: ' ',
	models.ClassQuote: '\'', models.ClassAngle: '<', models.ClassParen: '(', models.ClassSlash: '/',
	models.ClassDot: '.', models.ClassComma: ',', models.ClassDash: '-', models.ClassEquals: '=',
	models.ClassSemicolon: ';', models.ClassSymbol: '!', models.ClassControl: '?', models.ClassHigh: '~',
}

// maxShapedValue bounds a shipped value's shape.
const maxShapedValue = 64

// shapeQuery keeps parameter names and replaces every value by its shape:
// each decoded byte becomes its class's representative, re-encoded so the
// collector's side decodes the same shape back.
func shapeQuery(q string) string {
	if q == "" {
		return ""
	}
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(q))
	inValue := false
	n := 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '&':
			inValue, n = false, 0
			out = append(out, c)
			continue
		case c == '=' && !inValue:
			inValue = true
			out = append(out, c)
			continue
		case !inValue:
			out = append(out, c)
			continue
		}
		// A value byte: decode it, then ship its shape.
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(q) && isHexDigit(q[i+1]) && isHexDigit(q[i+2]):
			c = unhexDigit(q[i+1])<<4 | unhexDigit(q[i+2])
			i += 2
		}
		if n == maxShapedValue {
			continue
		}
		n++
		r := classRepresentative[models.ClassOf(c)]
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			out = append(out, r)
		} else {
			out = append(out, '%', hex[r>>4], hex[r&15])
		}
	}
	return string(out)
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhexDigit(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
