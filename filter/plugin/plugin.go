package plugin

import (
	"strconv"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/wordeq"
	"github.com/meshward/meshward/models"
)

// Names of the metrics the filter defines. Envoy exposes Wasm metrics to
// Prometheus under these exact names (custom stat namespace, no envoy_
// prefix); Istio needs them listed in proxyStatsMatcher.
const (
	MetricRequests       = "meshward_requests_total"
	MetricFlagged        = "meshward_flagged_total"
	MetricDenied         = "meshward_denied_total"
	MetricUnscored       = "meshward_unscored_total"
	MetricConfigRejected = "meshward_config_rejected_total"
	// MetricUninspected counts request bytes the filter let through
	// without inspecting them: a body past max_body_bytes, headers past
	// max_headers or max_header_bytes (monitor mode, or over_limit
	// inspect).
	MetricUninspected = "meshward_uninspected_bytes_total"
	// MetricUnidentified counts requests whose caller nothing trustworthy
	// named (scored as models.UnknownSource; never shipped in learn mode).
	MetricUnidentified = "meshward_unidentified_total"
	// MetricDigestsCapped counts records whose query or body carried as
	// many value digests as a record may (models.MaxDigestMarks): the
	// short values past them went without one, and their fields are not
	// enumerated by digests where such requests are learned.
	MetricDigestsCapped = "meshward_digest_marks_capped_total"
	// MetricQueryCut counts records whose query was longer than a record
	// carries (models.MaxRecordedQuery: only with max_header_bytes above
	// its default): the pairs past it were left out of the record.
	MetricQueryCut = "meshward_record_query_cut_total"
	// MetricScore is a histogram of scores in thousandths (0–1000).
	MetricScore = "meshward_score_permille"
)

// MetricKind is how Envoy exposes a metric.
type MetricKind int

// Metric kinds: a counter, or a histogram (exposed as _bucket, _sum and
// _count).
const (
	Counter MetricKind = iota
	Histogram
)

// Metric is one metric the filter defines.
type Metric struct {
	Name string
	Kind MetricKind
}

// Metrics lists every metric the filter defines: the dashboards, alerts and
// Istio's proxyStatsMatcher are checked against it.
var Metrics = []Metric{
	{MetricRequests, Counter}, {MetricFlagged, Counter}, {MetricDenied, Counter}, {MetricUnscored, Counter},
	{MetricConfigRejected, Counter}, {MetricShipped, Counter}, {MetricDropped, Counter}, {MetricScore, Histogram},
	{MetricUninspected, Counter},
	{MetricUnidentified, Counter},
	{MetricDigestsCapped, Counter},
	{MetricQueryCut, Counter},
}

// Response headers and body of a denied request.
const (
	headerReason = "x-meshward-reason"
	denyBody     = "request denied by meshward: anomalous traffic for this workload\n"
	limitBody    = "request denied by meshward: larger than this workload inspects\n"
	// DenyDetails is the response-code details Envoy records for a request
	// the filter denied (%RESPONSE_CODE_DETAILS% in access logs).
	DenyDetails = "meshward_denied"
)

// NewVMContext returns the filter's VM context, for proxywasm.SetVMContext.
func NewVMContext() types.VMContext { return &vmContext{} }

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) NewPluginContext(uint32) types.PluginContext { return &pluginContext{} }

type metrics struct {
	requests, flagged, denied, unscored, rejected proxywasm.MetricCounter
	shipped, dropped, uninspected, unidentified   proxywasm.MetricCounter
	digestsCapped, queryCut                       proxywasm.MetricCounter
	score                                         proxywasm.MetricHistogram
}

type pluginContext struct {
	types.DefaultPluginContext
	settings *pluginconfig.Settings // last good configuration; nil before the first
	metrics  *metrics
	// scratch is the scoring memory; one request is scored at a time.
	scratch models.Scratch
	// ship buffers records for the collector.
	ship shipper
	// pendingRequests counts requests not yet added to MetricRequests. The
	// busiest counter is flushed on every tick instead of costing a host
	// call per request; Envoy reports metrics periodically anyway.
	// pendingUninspected does the same for MetricUninspected.
	pendingRequests, pendingUninspected uint64
	// free holds finished stream contexts for reuse: a context and its
	// header slice are allocated once per concurrent stream, not per request
	// (allocation dominates the filter's cost compiled to WebAssembly).
	free []*httpContext
	// gc schedules garbage collection outside requests (gc_wasip1.go).
	gc collector
}

// maxFree bounds the finished contexts kept for reuse.
const maxFree = 64

// tickPeriod is how often the plugin flushes batched metrics.
const tickPeriod = 1000 // milliseconds

// OnTick flushes batched metrics, ships the next batch of records, and
// collects garbage when enough has been allocated.
func (p *pluginContext) OnTick() {
	p.flush()
	p.sendBatch()
	p.gc.tick()
}

// OnPluginDone flushes batched metrics before the plugin goes away.
func (p *pluginContext) OnPluginDone() bool {
	p.flush()
	return true
}

func (p *pluginContext) flush() {
	if p.metrics != nil && p.pendingRequests > 0 {
		p.metrics.requests.Increment(p.pendingRequests)
		p.pendingRequests = 0
	}
	if p.metrics != nil && p.pendingUninspected > 0 {
		p.metrics.uninspected.Increment(p.pendingUninspected)
		p.pendingUninspected = 0
	}
}

func (p *pluginContext) defineMetrics() {
	if p.metrics != nil {
		return
	}
	// Defined in the order of Metrics.
	p.metrics = &metrics{
		requests: proxywasm.DefineCounterMetric(Metrics[0].Name),
		flagged:  proxywasm.DefineCounterMetric(Metrics[1].Name),
		denied:   proxywasm.DefineCounterMetric(Metrics[2].Name),
		unscored: proxywasm.DefineCounterMetric(Metrics[3].Name),
		rejected: proxywasm.DefineCounterMetric(Metrics[4].Name),
		shipped:  proxywasm.DefineCounterMetric(Metrics[5].Name),
		dropped:  proxywasm.DefineCounterMetric(Metrics[6].Name),
		score:    proxywasm.DefineHistogramMetric(Metrics[7].Name),
		// The uninspected bytes are flushed with the request count.
		uninspected:   proxywasm.DefineCounterMetric(Metrics[8].Name),
		unidentified:  proxywasm.DefineCounterMetric(Metrics[9].Name),
		digestsCapped: proxywasm.DefineCounterMetric(Metrics[10].Name),
		queryCut:      proxywasm.DefineCounterMetric(Metrics[11].Name),
	}
}

// OnPluginStart parses and validates the configuration. A bad one is refused
// with a log line naming each wrong field; the last good configuration (and
// its model) stays in force.
func (p *pluginContext) OnPluginStart(int) (status types.OnPluginStartStatus) {
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogCriticalf("meshward: configuration rejected: internal error: %v", r)
			status = types.OnPluginStartStatusFailed
		}
	}()
	p.defineMetrics()
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogCriticalf("meshward: configuration rejected: cannot read it: %v", err)
		p.metrics.rejected.Increment(1)
		return types.OnPluginStartStatusFailed
	}
	s, err := pluginconfig.Parse(data, nodeWorkload())
	if err != nil {
		p.metrics.rejected.Increment(1)
		kept := "no previous configuration"
		if p.settings != nil {
			kept = "keeping the previous configuration"
			if p.settings.Model != nil {
				kept += " and model " + p.settings.Model.SHA256()[:12]
			}
		}
		proxywasm.LogCriticalf("meshward: configuration rejected (%s): %s", kept, strings.ReplaceAll(err.Error(), "\n", "; "))
		return types.OnPluginStartStatusFailed
	}
	p.settings = s
	p.ship.version = newRecordVersion(s)
	if err := proxywasm.SetTickPeriodMilliSeconds(tickPeriod); err != nil {
		proxywasm.LogWarnf("meshward: no tick (%v): request counts are flushed only when the plugin stops", err)
	}
	model := "none"
	if s.Model != nil {
		model = s.Model.SHA256()[:12] + " (section of " + s.Model.SectionFor + ", " + strconv.Itoa(s.Model.Size()) + " bytes)"
	}
	proxywasm.LogInfof("meshward: started: mode=%s workload=%s threshold=%.3f model=%s", s.Mode, s.Workload, s.Threshold, model)
	if s.KeyMismatch {
		proxywasm.LogWarnf("meshward: the model enumerates value digests made with another value_key: those values are judged by their shapes until a model trained with this key arrives")
	}
	// Decoding the configuration left garbage: collect it now, not in the
	// middle of requests.
	p.gc.collect("configuration")
	return types.OnPluginStartStatusOK
}

func (p *pluginContext) NewHttpContext(uint32) types.HttpContext {
	if n := len(p.free); n > 0 {
		h := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		h.pooled = false
		return h
	}
	return &httpContext{plugin: p}
}

// recycle resets a finished stream's context and keeps it for the next
// stream. The host calls nothing on a stream after its OnHttpStreamDone
// (proxy_on_log), only proxy_on_done and proxy_on_delete, which the SDK
// handles without it.
func (p *pluginContext) recycle(h *httpContext) {
	if h.pooled {
		// Ended twice: it must not be handed to two streams.
		return
	}
	if len(p.free) >= maxFree {
		h.bufs.release()
		return
	}
	h.bufs.release()
	h.reset()
	h.pooled = true
	p.free = append(p.free, h)
}

// reset readies a finished stream's context for the next stream: every
// field as a new context has it (TestRecycledContextIsFresh), but for the
// header slice's backing array and the pairs walker, which are kept. It goes
// field by field: assigning a whole new context is a memory.fill of it in
// wasm, and clearing the old header views costs as much again. They need no
// clearing: the next request overwrites the entries it uses, nothing reads
// past the slice's length, and the buffers they view are goabi's to reuse.
func (h *httpContext) reset() {
	// The request whole (a small struct; its unexported state too), but for
	// the body's prefix, the context's own copy, whose array is kept, and
	// the header slice's.
	h.req = models.Request{Headers: h.req.Headers[:0], Body: h.req.Body[:0]}
	if h.tail.Used() {
		h.tail.Reset()
	}
	h.verdict.Clear()
	h.waiting, h.pooled, h.forged, h.scored, h.flagged, h.learned = false, false, false, false, false, false
	h.read, h.bodyBytes, h.overLimit, h.denied, h.section = 0, 0, false, false, nil
	h.decision, h.enforced = enforcement.Decision{}, false
}

// nodeWorkload reads the local workload from Istio's node metadata, as
// "name.namespace"; "" when absent.
func nodeWorkload() string {
	name, err := proxywasm.GetProperty([]string{"node", "metadata", "WORKLOAD_NAME"})
	if err != nil || len(name) == 0 {
		return ""
	}
	ns, err := proxywasm.GetProperty([]string{"node", "metadata", "NAMESPACE"})
	if err != nil || len(ns) == 0 {
		return string(name)
	}
	return string(name) + "." + string(ns)
}

type httpContext struct {
	types.DefaultHttpContext
	plugin *pluginContext
	// A request with a body is held after its headers while its body is
	// read as it arrives (the proxy buffers it), up to the body limit, then
	// judged: waiting says the body is being read, read how much of the
	// proxy's buffer was.
	waiting bool
	read    int
	// bodyBytes counts the body's bytes so far; overLimit says the request
	// went beyond an inspection limit.
	bodyBytes int64
	overLimit bool
	// denied says the filter answered the request itself.
	denied bool
	req    models.Request
	bufs   hostBuffers // the host buffers req views
	// tail reads what the record carries of a body past req.Body's prefix.
	tail models.BodyTail
	// scratch reads this stream's body (its state outlives a call); nil
	// until the context first reads one, kept when it is reused. section
	// is what the request is judged against, from its headers to its end.
	scratch *models.Scratch
	section *models.Workload
	// pooled marks a finished context waiting in the plugin's free list.
	pooled bool
	forged bool
	// scored, flagged and verdict record the request phase's verdict, which
	// the response phase completes with the status and size.
	scored, flagged bool
	verdict         models.Verdict
	// learned marks a request read in learn mode, shipped unscored.
	learned bool
	// decision is the policy's answer about a flagged request; enforced
	// says the filter denied it.
	decision enforcement.Decision
	enforced bool
}

// OnHttpRequestHeaders reads the request and judges it, or starts reading
// its body, holding the request until it is judged. Any internal failure
// lets the request through and counts it as unscored.
func (h *httpContext) OnHttpRequestHeaders(_ int, endOfStream bool) (action types.Action) {
	p := h.plugin
	s, m := p.settings, p.metrics
	if s == nil || m == nil {
		// Not configured (the host should not send traffic then): fail open.
		return types.ActionContinue
	}
	defer h.failOpen(&action)
	p.pendingRequests++
	lim := headerLimits{count: s.MaxHeaders, bytes: s.MaxHeaderBytes}
	if s.Mode == pluginconfig.ModeLearn {
		// Learning is recording: the request is read only to be shipped.
		if s.CollectorCluster != "" {
			// An unidentified caller is never learned as one.
			if _, err := readRequest(&h.req, &h.bufs, s.Workload, s.ScoreHeader, lim); err == nil {
				h.learned = h.req.Source != models.UnknownSource
				if !h.learned {
					m.unidentified.Increment(1)
				}
			}
		}
		return types.ActionContinue
	}
	hr, err := readRequest(&h.req, &h.bufs, s.Workload, s.ScoreHeader, lim)
	if err != nil {
		m.unscored.Increment(1)
		proxywasm.LogWarnf("meshward: request let through unscored: %v", err)
		return types.ActionContinue
	}
	h.forged = hr.forged
	if h.req.Source == models.UnknownSource {
		m.unidentified.Increment(1)
	}
	if hr.uninspected > 0 {
		p.pendingUninspected += uint64(hr.uninspected)
		h.overLimit = true
		if h.denyOverLimit(431) {
			return types.ActionPause
		}
	}
	if s.Section == nil {
		m.unscored.Increment(1)
		return types.ActionContinue
	}
	h.section = s.Section
	if endOfStream {
		// No body: scored at once with the plugin's scratch (one request
		// at a time), in place (in wasm, a Verdict returned and stored by
		// value is two memory.copy calls).
		p.scratch.BodyLimit = s.MaxBodyBytes
		h.section.ScoreInto(&h.req, &p.scratch, &h.verdict)
		return h.judge()
	}
	if h.req.RequestBytes > int64(s.MaxBodyBytes) {
		// The client says the body goes beyond what is inspected.
		h.overLimit = true
		if h.denyOverLimit(413) {
			return types.ActionPause
		}
	}
	if h.scratch == nil {
		h.scratch = new(models.Scratch)
	}
	h.scratch.BodyLimit = s.MaxBodyBytes
	h.section.Begin(&h.req, h.scratch, &h.verdict)
	h.waiting, h.read, h.bodyBytes = true, 0, 0
	return types.ActionPause
}

// denyOverLimit answers a request beyond an inspection limit with status
// (413: its body, 431: its headers) when enforce mode denies such
// requests, and reports whether it did.
func (h *httpContext) denyOverLimit(status uint32) bool {
	p := h.plugin
	s, m := p.settings, p.metrics
	if s.Mode != pluginconfig.ModeEnforce || s.OverLimit != pluginconfig.LimitDeny {
		return false
	}
	m.denied.Increment(1)
	reason := "body_over_limit"
	if status == 431 {
		reason = "headers_over_limit"
	}
	err := proxywasm.SendHttpResponse(status, [][2]string{
		{"content-type", "text/plain; charset=utf-8"},
		{headerReason, reason},
	}, []byte(limitBody), -1)
	if err != nil {
		proxywasm.LogErrorf("meshward: could not send the %d: %v", status, err)
		return false
	}
	h.waiting, h.denied = false, true
	return true
}

// OnHttpRequestBody reads the body as it arrives, up to the body limit, and
// judges the request at its end or at the limit. The proxy buffers what was
// held (the body so far is in its buffer at every call): only what is new
// since the last call is read, then handed back.
func (h *httpContext) OnHttpRequestBody(bodySize int, endOfStream bool) (action types.Action) {
	if h.learned {
		h.learnBody(bodySize)
		return types.ActionContinue
	}
	p := h.plugin
	if !h.waiting {
		// Judged already and let through: what passes now is past the
		// limit, uninspected (the proxy's buffer holds only what is new).
		if h.scored && !h.denied && bodySize > 0 {
			p.pendingUninspected += uint64(bodySize)
			h.bodyBytes += int64(bodySize)
			h.tail.Cut()
		}
		return types.ActionContinue
	}
	defer h.failOpen(&action)
	s := p.settings
	if n := bodySize - h.read; n > 0 {
		chunk, err := goabi.RequestBody(h.read, n)
		if err != nil {
			// Unreadable: judged on what was read.
			endOfStream = true
		} else {
			// Scored before it is kept: keeping a JSON body makes the
			// request's body the form of its fields (models.BodyTail.Keep).
			read := h.section.Feed(chunk, h.scratch)
			h.keepPrefix(chunk)
			goabi.Release(chunk)
			h.read = bodySize
			h.bodyBytes = int64(bodySize)
			if read < n {
				p.pendingUninspected += uint64(n - read)
			}
		}
	}
	limit := int64(s.MaxBodyBytes)
	if !endOfStream && h.bodyBytes < limit {
		// Hold the request until its body is read.
		return types.ActionPause
	}
	h.waiting = false
	if h.bodyBytes > limit || !endOfStream {
		// More came, or is coming, than is inspected.
		h.overLimit = true
		if h.denyOverLimit(413) {
			return types.ActionPause
		}
	}
	if !endOfStream {
		// Judged at the limit, before the rest arrives.
		h.scratch.Truncate()
	}
	h.req.RequestBytes = max(h.req.RequestBytes, h.bodyBytes)
	h.section.End(&h.req, h.scratch, &h.verdict)
	return h.judge()
}

// keepPrefix keeps what the stream's record carries of a body (shipped as
// its shape): its first bytes, and what lies past them read as it passes
// (models.BodyTail, up to the body limit).
// A JSON body is kept as the form of its fields (models.BodyTail.Keep);
// keptBody ends it.
func (h *httpContext) keepPrefix(chunk []byte) {
	// Past the prefix, only for a record, and none is shipped without a
	// collector.
	s := h.plugin.settings
	h.tail.Keep(&h.req, chunk, s.MaxBodyBytes, s.CollectorCluster != "")
}

// keptBody ends what keepPrefix kept, once the body has ended: the record
// can be written.
func (h *httpContext) keptBody() {
	s := h.plugin.settings
	h.tail.EndKeep(&h.req, s.MaxBodyBytes, s.CollectorCluster != "")
}

// learnBody keeps what the record of a request read in learn mode carries
// of its body, chunk by chunk as it passes (nothing is held back: learning
// never delays), up to the body limit, and counts its bytes.
func (h *httpContext) learnBody(chunkSize int) {
	defer func() { _ = recover() }()
	if chunkSize <= 0 {
		return
	}
	seen := h.bodyBytes
	h.bodyBytes += int64(chunkSize)
	h.req.RequestBytes = max(h.req.RequestBytes, h.bodyBytes)
	want := min(int64(chunkSize), int64(h.plugin.settings.MaxBodyBytes)-seen)
	if !h.tail.Reading() {
		// Only the prefix is still wanted.
		want = min(want, int64(models.MaxBodyPrefix-len(h.req.Body)))
	}
	if want > 0 {
		if chunk, err := goabi.RequestBody(0, int(want)); err == nil {
			h.keepPrefix(chunk)
			goabi.Release(chunk)
		}
	}
	if want < int64(chunkSize) {
		// Past the limit: the record's last value is cut.
		h.tail.Cut()
	}
}

// OnHttpStreamDone queues the stream's record for the collector, with the
// final verdict (the response's status and size included when there was one).
func (h *httpContext) OnHttpStreamDone() {
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogErrorf("meshward: could not queue a record: %v", r)
		}
	}()
	p := h.plugin
	if p.settings != nil && p.metrics != nil {
		p.enqueue(h)
	}
	p.recycle(h)
	p.gc.streamDone()
}

// failOpen turns a panic into a request let through and counted unscored.
func (h *httpContext) failOpen(action *types.Action) {
	if r := recover(); r != nil {
		h.waiting = false
		if m := h.plugin.metrics; m != nil {
			m.unscored.Increment(1)
		}
		proxywasm.LogErrorf("meshward: request let through unscored: internal error: %v", r)
		*action = types.ActionContinue
	}
}

// OnHttpResponseHeaders revisits a scored request with its response's status
// and size: a route answering with a status class it rarely does, or far more
// bytes than usual (exfiltration), raises the score. It can no longer block;
// it counts the request as flagged if the request phase did not.
func (h *httpContext) OnHttpResponseHeaders(int, bool) (action types.Action) {
	if h.learned {
		h.readResponse()
		return types.ActionContinue
	}
	if !h.scored {
		return types.ActionContinue
	}
	defer h.failOpen(&action)
	p := h.plugin
	s, m := p.settings, p.metrics
	if !h.readResponse() {
		return types.ActionContinue
	}
	v := s.Section.RespondWith(&h.req, h.verdict)
	h.verdict = v
	flagged := v.Score > s.Threshold
	if flagged && !h.flagged {
		m.flagged.Increment(1)
	}
	if s.ResponseScore {
		_ = proxywasm.ReplaceHttpResponseHeader(s.ScoreHeader, formatPermille(uint64(v.Score*1000+0.5)))
		if flagged {
			_ = proxywasm.ReplaceHttpResponseHeader(headerReason, reasonList(&v))
		}
	}
	return types.ActionContinue
}

// readResponse takes the response's status and size into the request, from
// one fetch of the response headers.
func (h *httpContext) readResponse() bool {
	buf, err := goabi.ResponseHeaderPairs()
	if err != nil {
		return false
	}
	// Only numbers are taken from it: the buffer goes back at once.
	defer goabi.Release(buf)
	haveStatus, haveLength := false, false
	for it := goabi.NewPairs(buf); it.Next(); {
		switch name := bytesString(it.Name); {
		case wordeq.Equal(name, ":status"):
			if !haveStatus {
				h.req.Status, _ = strconv.Atoi(bytesString(it.Value))
				haveStatus = true
			}
		case wordeq.Equal(name, "content-length"):
			if !haveLength {
				h.req.ResponseBytes, _ = strconv.ParseInt(bytesString(it.Value), 10, 64)
				haveLength = true
			}
		}
	}
	return haveStatus
}

// judge acts on the request's verdict, in h.verdict.
func (h *httpContext) judge() types.Action {
	p := h.plugin
	s, m := p.settings, p.metrics
	h.scored = true
	v := &h.verdict
	permille := uint64(v.Score*1000 + 0.5)
	// The score histogram and the score header go straight to the host
	// (goabi), not through the SDK's layers: they run for every request.
	_ = goabi.RecordMetric(uint32(m.score), permille)
	score := formatPermille(permille)
	if v.Score <= s.Threshold {
		// Upstream must only ever see meshward's own verdict headers.
		_ = goabi.ReplaceRequestHeader(s.ScoreHeader, score)
		if h.forged {
			_ = proxywasm.RemoveHttpRequestHeader(headerReason)
		}
		return types.ActionContinue
	}
	m.flagged.Increment(1)
	h.flagged = true
	reasons := reasonList(v)
	// Graduated: only what the request itself shows denies, exceptions
	// applied (graduate.go).
	if h.decide(s, &p.scratch) && s.Mode == pluginconfig.ModeEnforce {
		m.denied.Increment(1)
		err := proxywasm.SendHttpResponse(403, [][2]string{
			{"content-type", "text/plain; charset=utf-8"},
			{s.ScoreHeader, score},
			{headerReason, reasons},
			{headerDenied, h.decision.Deny.String()},
		}, []byte(denyBody), -1)
		if err != nil {
			proxywasm.LogErrorf("meshward: could not send the 403: %v", err)
			return types.ActionContinue
		}
		h.denied, h.enforced = true, true
		return types.ActionPause
	}
	_ = goabi.ReplaceRequestHeader(s.ScoreHeader, score)
	_ = goabi.ReplaceRequestHeader(headerReason, reasons)
	return types.ActionContinue
}

// formatPermille writes a score given in thousandths as "0.123" (or "1.000")
// without strconv's float formatting, which is slow in WebAssembly, nor an
// allocation: every score's text is a slice of one string built at start.
func formatPermille(p uint64) string {
	if p >= 1000 {
		return "1.000"
	}
	return permilleText[p*5 : p*5+5]
}

// permilleText is "0.000" "0.001" … "0.999" end to end.
var permilleText = func() string {
	b := make([]byte, 0, 5000)
	for p := 0; p < 1000; p++ {
		b = append(b, '0', '.', byte('0'+p/100), byte('0'+p/10%10), byte('0'+p%10))
	}
	return string(b)
}()

func reasonList(v *models.Verdict) string {
	var b strings.Builder
	for i, r := range v.ReasonList() {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.Code.String())
	}
	return b.String()
}
