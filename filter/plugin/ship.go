package plugin

import (
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

// Shipping records to the collector. Each stream's record is encoded when
// the stream ends (so the response's status and size are in it) if it was
// flagged or falls in the sampled share; records wait in a bounded buffer;
// every tick one batch goes to the collector's cluster with DispatchHttpCall.
// What does not fit the buffer is dropped and counted; a batch the collector
// pushes back (503, or no answer) is kept and retried after a pause.
//
// No raw body leaves the sidecar: the body's prefix, query and header values
// travel as their shape (models.ShapeQuery, models.ShapeValue): enough for
// the trainer's class-transition and length models, not the values
// themselves. Learn mode reads the body's prefix as it passes, without
// holding the request.

// Metric names of shipping.
const (
	MetricShipped = "meshward_records_shipped_total"
	MetricDropped = "meshward_records_dropped_total"
)

// collectorPath is the collector's batch endpoint.
const collectorPath = "/v1/records"

// shipper is the per-plugin record buffer.
type shipper struct {
	// version is what each record says it was scored with: the model's
	// sha256, and the share of unflagged requests shipped, encoded once per
	// configuration (the canary decision counts flagged rates per version).
	version  recordVersion
	buf      [][]byte
	inFlight int // records in the batch being sent; 0 when none
	pause    int // ticks to wait before the next batch
	rng      uint64
	scratch  []byte // shapes being encoded
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
	p.ship.buf = append(p.ship.buf, encodeRecord(&h.req, v.Score, flagged, &p.ship.version, &p.ship.scratch))
}

// recordVersion is the pre-encoded part of a record that says what it was
// scored with.
type recordVersion struct {
	// model is `,"model":"<sha256>"` (empty without a model); rate is
	// `,"sample_rate":<share>` (empty when every request is shipped).
	model, rate []byte
}

// newRecordVersion encodes a configuration's version fields once.
func newRecordVersion(s *pluginconfig.Settings) recordVersion {
	var v recordVersion
	if s.Model != nil {
		v.model = append([]byte(`,"model":`), appendJSONString(nil, s.Model.SHA256())...)
	}
	if s.SampleRate < 1 {
		v.rate = strconv.AppendFloat([]byte(`,"sample_rate":`), s.SampleRate, 'g', -1, 64)
	}
	return v
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
// An unflagged record stands for 1/sample_rate requests; a flagged one for
// itself (all are shipped). scratch is reusable working memory for shapes;
// the record itself is the only allocation.
func encodeRecord(r *models.Request, score float64, flagged bool, v *recordVersion, scratch *[]byte) []byte {
	// Cheap encodings: time and floats are formatted without the time and
	// strconv float code, which is slow compiled to WebAssembly; the route
	// and the shapes are built in place rather than as strings.
	var tbuf [models.MaxRouteBytes + 8]byte
	route := bytesString(models.AppendTemplate(tbuf[:0], r.Path))
	b := make([]byte, 0, recordSize(r, route, v))
	b = append(b, `{"ts_ns":`...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, route)
	b = append(b, `,"score":`...)
	b = appendFixed4(b, score)
	b = append(b, `,"flagged":`...)
	b = strconv.AppendBool(b, flagged)
	if v != nil {
		b = append(b, v.model...)
		if !flagged {
			b = append(b, v.rate...)
		}
	}
	b = append(b, `,"request":{"Method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"Path":`...)
	b = appendJSONString(b, route)
	b = append(b, `,"Query":`...)
	sc := (*scratch)[:0]
	if r.Query != "" {
		sc = models.AppendShapeQuery(sc, r.Query)
	}
	b = appendJSONString(b, bytesString(sc))
	b = append(b, `,"Source":`...)
	b = appendJSONString(b, r.Source)
	b = append(b, `,"Destination":`...)
	b = appendJSONString(b, r.Destination)
	b = append(b, `,"Status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, `,"RequestBytes":`...)
	b = strconv.AppendInt(b, max(r.RequestBytes, int64(len(r.Body))), 10)
	b = append(b, `,"ResponseBytes":`...)
	b = strconv.AppendInt(b, r.ResponseBytes, 10)
	if len(r.Body) > 0 {
		// The body travels as its shape, as query values do (base64: a
		// []byte in JSON).
		b = append(b, `,"Body":"`...)
		b = base64.StdEncoding.AppendEncode(b, models.ShapeBody(r))
		b = append(b, '"')
	}
	b = append(b, `,"Headers":[`...)
	n := 0
	for _, h := range r.Headers {
		if models.SkipHeader(h.Name) || n == models.MaxShippedHeaders {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `{"Name":`...)
		b = appendJSONString(b, h.Name)
		b = append(b, `,"Value":`...)
		if h.Name == "content-type" && len(h.Value) <= models.MaxShippedContentType {
			// A media type names a format, not data, and the trainer
			// needs it to read the body as the filter will.
			b = appendJSONString(b, h.Value)
		} else {
			sc = models.AppendShapeValue(sc[:0], h.Value)
			b = appendJSONString(b, bytesString(sc))
		}
		b = append(b, '}')
	}
	*scratch = sc
	return append(b, "]}}"...)
}

// recordSize is about the length of a request's record, so that
// encodeRecord allocates it once: growing it (a second allocation and a copy
// of what was written) cost more than the rest of the encoding in wasm. It
// counts the fixed text generously and every variable part at its likely
// size (query shapes may be percent-encoded, a body's shape is base64);
// escaped bytes beyond that only cost a growth, as before.
func recordSize(r *models.Request, route string, v *recordVersion) int {
	n := 320 + 2*len(route) + len(r.Method) + 3*len(r.Query) + len(r.Source) + len(r.Destination)
	if v != nil {
		n += len(v.model) + len(v.rate)
	}
	if len(r.Body) > 0 {
		n += (min(len(r.Body), models.MaxBodyPrefix)*3)/2 + 16
	}
	for i, h := range r.Headers {
		if i == models.MaxShippedHeaders {
			break
		}
		n += 24 + len(h.Name) + min(len(h.Value), models.MaxValueBytes)
	}
	return n
}

// appendJSONString writes s as a JSON string. Control bytes are escaped,
// valid UTF-8 is kept, and a byte that is not valid UTF-8 becomes the code
// point of the same number (so a hostile request cannot make the line
// invalid JSON, and a shape's high-class bytes stay high-class).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		// Runs of plain ASCII are copied at once.
		j := i
		for j < len(s) && s[j] >= 0x20 && s[j] < 0x7f && s[j] != '"' && s[j] != '\\' {
			j++
		}
		b = append(b, s[i:j]...)
		if i = j; i == len(s) {
			break
		}
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
			i++
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			i++
		case c < 0x80:
			b = append(b, c)
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n <= 1 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
				i++
				continue
			}
			b = append(b, s[i:i+n]...)
			i += n
		}
	}
	return append(b, '"')
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
