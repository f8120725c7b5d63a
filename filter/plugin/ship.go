package plugin

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/wordeq"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// Shipping records to the collector. Each stream's record is encoded when
// the stream ends (so the response's status and size are in it) if it was
// flagged, is on a new edge (a source the model's section never saw
// calling this workload, or a workload the model has no section of), or
// falls in the sampled share: the lateral-movement detector behind the
// collector must see every request on a new edge, a slow fan-out's too; records wait in a bounded buffer;
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

// keyHeader is the batch key's header as proxy-wasm hands headers over:
// lower-case (HTTP/2).
var keyHeader = strings.ToLower(record.IdempotencyKeyHeader)

// shipper is the per-plugin record buffer.
type shipper struct {
	// version is what each record says it was scored with: the model's
	// sha256, and the share of unflagged requests shipped, encoded once per
	// configuration (the canary decision counts flagged rates per version).
	version  record.Version
	buf      [][]byte
	bytes    int // of the records in buf
	inFlight int // records in the batch being sent; 0 when none
	// retryN and key are the batch pushed back last: it is sent again as
	// it was, under the same Idempotency-Key, so the collector counts it
	// once however often it arrives.
	retryN  int
	key     string
	pause   int // ticks to wait before the next batch
	rng     uint64
	scratch []byte // shapes being encoded
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
	// Shipped whatever the sample, a record stands for itself.
	// Flagged at the request phase (the policy's decision is in the record)
	// counts too: meshward preview counts what enforce would deny.
	whole := flagged || h.flagged || s.SampleRate < 1 && h.scored && newEdge(s, h)
	if !whole && !p.ship.sample(s.SampleRate) {
		return
	}
	if len(p.ship.buf) >= s.MaxBuffer {
		p.metrics.dropped.Increment(1)
		return
	}
	h.keptBody()
	var bounds recordBounds
	rec := encodeRecord(&h.req, &h.tail, v.Score, flagged, whole, &p.ship.version, &s.ValueKey, &p.ship.scratch, &bounds)
	if bounds.digestsCapped {
		p.metrics.digestsCapped.Increment(1)
	}
	if bounds.queryCut {
		p.metrics.queryCut.Increment(1)
	}
	if h.flagged {
		rec = appendDecision(rec, v, &h.decision, h.enforced)
	}
	if p.ship.bytes+len(rec) > s.MaxBufferBytes {
		p.metrics.dropped.Increment(1)
		return
	}
	p.ship.buf = append(p.ship.buf, rec)
	p.ship.bytes += len(rec)
}

// maxBatchBytes bounds one batch's body (at least one record goes): the
// collector refuses a batch over its -collector-max-batch-bytes (4 MiB by
// default) as a whole.
const maxBatchBytes = 1 << 20

// newEdge says whether a scored request is on an edge the model never
// learned: its workload has no section of its own (the global fallback
// scored it), or the section never saw the source (its verdict says so:
// looking the source up again would cost a hash per request in wasm).
func newEdge(s *pluginconfig.Settings, h *httpContext) bool {
	return h.section == nil || !wordeq.Equal(h.section.Name, s.Workload) || h.verdict.NewCaller
}

// newRecordVersion encodes a configuration's version fields once.
func newRecordVersion(s *pluginconfig.Settings) record.Version {
	sha := ""
	if s.Model != nil {
		sha = s.Model.SHA256()
	}
	return record.NewVersion(sha, s.SampleRate)
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
	if p.ship.retryN > 0 {
		n = min(p.ship.retryN, len(p.ship.buf))
	} else {
		p.ship.key = batchKey()
	}
	size := 0
	for i, r := range p.ship.buf[:n] {
		if i > 0 && size+len(r)+1 > maxBatchBytes {
			n = i
			break
		}
		size += len(r) + 1
	}
	body := make([]byte, 0, size)
	for _, r := range p.ship.buf[:n] {
		body = append(body, r...)
		body = append(body, '\n')
	}
	headers := [][2]string{
		{":method", "POST"}, {":path", record.Path}, {":authority", "meshward-collector"},
		{"content-type", record.ContentType}, {keyHeader, p.ship.key},
	}
	// No credential: the collector knows the sidecar by its mTLS identity
	// (the collector cluster's client certificate, or Istio's mTLS).
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
// invalid or too large (400, 413: resending them would not help), and
// keeps the batch for a later retry otherwise.
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
	case "200", "400", "413":
		p.metrics.shipped.Increment(uint64(n))
		for i, r := range p.ship.buf[:n] {
			p.ship.bytes -= len(r)
			p.ship.buf[i] = nil // its memory is the VM's again
		}
		p.ship.buf = p.ship.buf[n:]
		p.ship.retryN = 0
		if status != "200" {
			// Sending it again would not help.
			proxywasm.LogWarnf("meshward: the collector refused a batch or records of it (%s, %d bytes of explanation)", status, bodySize)
		}
	default:
		p.ship.pause = backoffTicks
		p.ship.retryN = n
	}
}

// batchKey is a new batch's Idempotency-Key: 128 random bits (the runtime
// seeds math/rand/v2 from the host's random_get), so two sidecars, or one
// restarted, never reuse one.
func batchKey() string {
	const hex = "0123456789abcdef"
	var b [32]byte
	for i, r := 0, rand.Uint64(); i < 16; i, r = i+1, r>>4 {
		b[i] = hex[r&15]
	}
	for i, r := 16, rand.Uint64(); i < 32; i, r = i+1, r>>4 {
		b[i] = hex[r&15]
	}
	return string(b[:])
}

// encodeRecord writes one record as the collector's JSON line
// (record.Record). A sampled record stands for 1/sample_rate requests; a
// whole one (flagged, or on a new edge: all of those are shipped) for
// itself. With a value key, short query and form values carry their
// digests (models.AppendShapeQueryDigest). bounds (when not nil) says
// which of a record's bounds the request reached: the query or the body
// carries as many digests as a record may (models.MaxDigestMarks), so that
// values past them went without one; the query was cut
// (models.RecordedQuery).
// scratch is reusable working memory for shapes; the record itself is the
// only allocation.
func encodeRecord(r *models.Request, tail *models.BodyTail, score float64, flagged, whole bool, v *record.Version, key *models.ValueKey, scratch *[]byte, bounds *recordBounds) []byte {
	// The route and the shapes are built in place rather than as strings.
	var tbuf [models.MaxRouteBytes + 8]byte
	route := bytesString(models.AppendTemplate(tbuf[:0], r.Path))
	b := make([]byte, 0, recordSize(r, tail, route, v, key))
	b = record.AppendHead(b, time.Now().UnixNano(), route, score, flagged, v, !whole)
	sc := (*scratch)[:0]
	query, cut := models.RecordedQuery(r.Query)
	if query != "" {
		sc = models.AppendShapeQueryDigest(sc, query, key)
	}
	var body []byte
	if len(r.Body) > 0 {
		// The body travels as its shape, as query values do.
		body = models.AppendShapeBody(nil, r, tail, key)
	}
	if bounds != nil {
		bounds.queryCut = cut
		bounds.digestsCapped = key.Set() && (models.DigestMarks(sc) == models.MaxDigestMarks || models.DigestMarks(body) == models.MaxDigestMarks)
	}
	size := r.RequestBytes
	if r.FormBytes == 0 {
		// The body kept is the body's prefix (a JSON body's is the form of
		// its fields, which says nothing of the body's size).
		size = max(size, int64(len(r.Body)))
	}
	b = record.AppendRequest(b, r.Method, route, bytesString(sc), r.Source, r.Destination, r.Status,
		size, r.ResponseBytes, body, key.ID(), true, r.FormBytes)
	n := 0
	for _, h := range r.Headers {
		if models.SkipHeader(h.Name) || n == models.MaxShippedHeaders {
			continue
		}
		value := h.Value
		if h.Name != "content-type" || len(h.Value) > models.MaxShippedContentType {
			// A media type names a format, not data, and the trainer
			// needs it to read the body as the filter will; any other
			// value travels as its shape.
			sc = models.AppendShapeHeader(sc[:0], h.Value)
			value = bytesString(sc)
		}
		b = record.AppendHeader(b, n == 0, h.Name, value)
		n++
	}
	*scratch = sc
	return record.AppendEnd(b)
}

// recordBounds says which of a record's bounds a request reached
// (encodeRecord).
type recordBounds struct{ digestsCapped, queryCut bool }

// recordSize is about the length of a request's record, so that
// encodeRecord allocates it once: growing it (a second allocation and a copy
// of what was written) cost more than the rest of the encoding in wasm. It
// counts the fixed text generously and every variable part at its likely
// size (query shapes may be percent-encoded, a body's shape is base64);
// escaped bytes beyond that only cost a growth, as before.
func recordSize(r *models.Request, tail *models.BodyTail, route string, v *record.Version, key *models.ValueKey) int {
	n := 320 + 2*len(route) + len(r.Method) + 3*len(r.Query) + len(r.Source) + len(r.Destination)
	if key.Set() {
		// A digest's mark per value at most (short ones carry one, up to
		// models.MaxDigestMarks in the query and in the body).
		q := min(strings.Count(r.Query, "="), models.MaxDigestMarks)
		body := min(bytes.Count(r.Body[:min(len(r.Body), models.MaxBodyPrefix)], []byte{'='}), models.MaxDigestMarks)
		n += models.DigestMarkLen * (q + body)
	}
	if v != nil {
		n += v.Len()
	}
	if len(r.Body) > 0 {
		n += (min(len(r.Body), models.MaxBodyPrefix)*3)/2 + 16
		if tail != nil && tail.Active() {
			n += tail.Len() * 4 / 3
		}
	}
	for i, h := range r.Headers {
		if i == models.MaxShippedHeaders {
			break
		}
		n += 24 + len(h.Name) + min(len(h.Value), models.MaxShippedHeaderValue)
	}
	return n
}
