// Package collector is the HTTP endpoint the filters ship their records to.
//
// Nothing a sender writes is believed: the collector learns who sent a
// batch from the mesh (the client certificate its TLS listener verified,
// or the x-forwarded-client-cert its own Istio sidecar set; bearer tokens
// bound to an identity only for local development), and accepts only
// records about the sender's own workload (identity.Binding), timestamped
// within a skew window of its own clock, with every number in range. It
// admits a batch before reading it (an in-flight slot first, then a bounded
// body read within a deadline), so a flood of large batches cannot exhaust
// its memory; it validates every record before writing any; it stores the
// good ones even when others are bad (and says which are bad, by line); and
// it applies a batch at most once (the sender's Idempotency-Key), so a
// retry never counts twice. It pushes back with 503 and Retry-After when
// busy or when the store is slow or down. Every refusal is counted by
// reason.
package collector

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/control-plane/internal/metric"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// Mode is how the collector learns who sent a batch.
type Mode string

// The identity modes.
const (
	// ModeTLS: the client certificate the collector's TLS listener verified
	// (plain Envoy: the collector cluster's transport socket presents the
	// sidecar's certificate through SDS).
	ModeTLS Mode = "tls"
	// ModeXFCC: the x-forwarded-client-cert header the collector's own
	// Istio sidecar sets (STRICT mTLS, and the header sanitized: see
	// identity.FromXFCC). Only behind that sidecar: anywhere else a client
	// writes the header itself.
	ModeXFCC Mode = "xfcc"
	// ModeToken: bearer tokens, each bound to one identity (Tokens), for
	// local development. Never put a token in a plugin configuration.
	ModeToken Mode = "token"
)

// Metric names.
const (
	// MetricRecords counts records by outcome: accepted, duplicate (part of
	// a batch applied before), refused.
	MetricRecords = "meshward_collector_records_total"
	// MetricRecordsRefused counts refused records by reason.
	MetricRecordsRefused = "meshward_collector_records_refused_total"
	// MetricBatchesRefused counts batches refused whole, by reason; the
	// bounds (busy, too_large, too_many_records, read_timeout) among them.
	MetricBatchesRefused = "meshward_collector_batches_refused_total"
)

// Reasons a record is refused (MetricRecordsRefused's label).
const (
	RefusedSyntax     = "syntax"              // not a JSON record
	RefusedInvalid    = "invalid"             // a field missing, malformed or out of range
	RefusedNotSender  = "not_sender_workload" // about another workload than the sender's
	RefusedSkew       = "ts_skew"             // timestamped outside the skew window
	RefusedSampleRate = "sample_rate"         // sample_rate outside [0.001, 1]
)

// Reasons a batch is refused whole (MetricBatchesRefused's label).
const (
	BatchUnauthenticated  = "unauthenticated"
	BatchNoKey            = "idempotency_key"
	BatchBusy             = "busy"
	BatchTooLarge         = "too_large"
	BatchTooManyRecords   = "too_many_records"
	BatchReadTimeout      = "read_timeout"
	BatchReadError        = "read_error"
	BatchStoreUnavailable = "store_unavailable"
)

// Config is everything the collector takes. Defaults in DefaultConfig.
type Config struct {
	// Identity is how a batch's sender is known (required).
	Identity Mode
	// Tokens maps each bearer token (ModeToken) to the SPIFFE ID it stands
	// for; every token is at least 32 bytes.
	Tokens map[string]string
	// Binding says which workloads an identity may send records about.
	Binding identity.Binding
	// MaxBatchBytes bounds a batch's body.
	MaxBatchBytes int64
	// MaxRecords bounds the records of one batch.
	MaxRecords int
	// MaxInFlight bounds the batches being read or stored at once; beyond
	// it the collector answers 503 with Retry-After before reading a byte.
	// Memory is bounded by about MaxInFlight × MaxBatchBytes × 4.
	MaxInFlight int
	// ReadTimeout bounds reading one admitted batch's body, so a slow
	// sender cannot hold a slot.
	ReadTimeout time.Duration
	// MaxSkew is how far a record's timestamp may be from the collector's
	// clock, either way.
	MaxSkew time.Duration
	// StoreTimeout bounds storing one batch.
	StoreTimeout time.Duration
	// RetryAfter is what a 503 tells the filter to wait.
	RetryAfter time.Duration
}

// DefaultConfig returns the defaults, in one place.
func DefaultConfig() Config {
	return Config{Identity: ModeTLS, Binding: identity.Binding{TrustDomain: identity.DefaultTrustDomain},
		MaxBatchBytes: 4 << 20, MaxRecords: 10_000, MaxInFlight: 8, ReadTimeout: 10 * time.Second,
		MaxSkew: 5 * time.Minute, StoreTimeout: 5 * time.Second, RetryAfter: 2 * time.Second}
}

// Sentinel errors of Validate.
var (
	ErrIdentity = errors.New("collector identity")
	ErrBounds   = errors.New("collector bounds")
)

// MinTokenBytes is the shortest bearer token accepted.
const MinTokenBytes = 32

// Validate reports every problem with the configuration, naming the flags.
func (c Config) Validate() error {
	var errs []error
	switch c.Identity {
	case ModeTLS, ModeXFCC:
		if len(c.Tokens) > 0 {
			errs = append(errs, fmt.Errorf("%w: -collector-token-file is only for -collector-identity=token", ErrIdentity))
		}
	case ModeToken:
		if len(c.Tokens) == 0 {
			errs = append(errs, fmt.Errorf("%w: -collector-identity=token needs -collector-token-file (lines of \"<token> <SPIFFE ID>\")", ErrIdentity))
		}
		for tok, id := range c.Tokens {
			if len(tok) < MinTokenBytes {
				errs = append(errs, fmt.Errorf("%w: a collector token of %d bytes (at least %d)", ErrIdentity, len(tok), MinTokenBytes))
			}
			if _, _, _, ok := identity.ParseSPIFFE(id); !ok {
				errs = append(errs, fmt.Errorf("%w: a collector token stands for %q, not a SPIFFE ID", ErrIdentity, id))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("%w: -collector-identity %q is not tls, xfcc or token", ErrIdentity, c.Identity))
	}
	if err := c.Binding.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%w: %v", ErrIdentity, err))
	}
	if c.MaxBatchBytes < 1024 || c.MaxRecords < 1 || c.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("%w: -collector-max-batch-bytes (≥ 1 KiB), -collector-max-records and -collector-max-in-flight must be positive", ErrBounds))
	}
	if c.ReadTimeout <= 0 || c.StoreTimeout <= 0 || c.RetryAfter <= 0 || c.MaxSkew <= 0 {
		errs = append(errs, fmt.Errorf("%w: -collector-read-timeout, -collector-max-skew, StoreTimeout and RetryAfter must be positive", ErrBounds))
	}
	return errors.Join(errs...)
}

// Ingester is what the collector stores batches in (the Redis store).
type Ingester interface {
	IngestBatch(ctx context.Context, b store.Batch) (duplicate bool, err error)
}

// Collector serves POST /v1/records.
type Collector struct {
	cfg   Config
	store Ingester
	slots chan struct{}
	now   func() time.Time

	records, refused, batches *prometheus.CounterVec
}

// New returns a collector, or the configuration's problems.
func New(cfg Config, st Ingester) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Collector{cfg: cfg, store: st, slots: make(chan struct{}, cfg.MaxInFlight), now: time.Now,
		records: defRecords.CounterVec(), refused: defRefused.CounterVec(), batches: defBatches.CounterVec(),
	}
	// Every outcome and reason is exported from the start, at 0: increase()
	// and the alerts on it see the first one.
	for _, o := range []string{"accepted", "duplicate", "refused"} {
		c.records.WithLabelValues(o)
	}
	for _, r := range []string{RefusedSyntax, RefusedInvalid, RefusedNotSender, RefusedSkew, RefusedSampleRate} {
		c.refused.WithLabelValues(r)
	}
	for _, r := range []string{BatchUnauthenticated, BatchNoKey, BatchBusy, BatchTooLarge, BatchTooManyRecords, BatchReadTimeout, BatchReadError, BatchStoreUnavailable} {
		c.batches.WithLabelValues(r)
	}
	return c, nil
}

// The collector's metrics, defined once (Metrics).
var (
	defRecords = metric.Def{Name: MetricRecords, Labels: []string{"outcome"},
		Help: "Records received by the collector, by outcome (accepted, duplicate: in a batch applied before, refused)."}
	defRefused = metric.Def{Name: MetricRecordsRefused, Labels: []string{"reason"},
		Help: "Records the collector refused, by reason (syntax, invalid, not_sender_workload, ts_skew, sample_rate)."}
	defBatches = metric.Def{Name: MetricBatchesRefused, Labels: []string{"reason"},
		Help: "Batches the collector refused whole, by reason (unauthenticated, idempotency_key, busy, too_large, too_many_records, read_timeout, read_error, store_unavailable)."}
)

// Metrics lists the collector's metrics, as Collectors registers them.
func Metrics() []metric.Def { return []metric.Def{defRecords, defRefused, defBatches} }

// Collectors are the collector's metrics, to register on /metrics.
func (c *Collector) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.records, c.refused, c.batches}
}

// SetClock replaces the clock records are checked against (tests).
func (c *Collector) SetClock(now func() time.Time) { c.now = now }

// Response is the body of every answer.
type Response struct {
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
	// Duplicate says the batch had been applied before (a retry): nothing
	// was counted again.
	Duplicate bool     `json:"duplicate,omitempty"`
	Errors    []string `json:"errors,omitempty"`
}

// maxErrors bounds the errors an answer lists (all are counted).
const maxErrors = 20

// ServeHTTP implements http.Handler.
func (c *Collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		c.answer(w, http.StatusMethodNotAllowed, Response{Errors: []string{"only POST is accepted"}})
		return
	}
	sender, err := c.identify(r)
	if err != nil {
		c.refuseBatch(w, http.StatusUnauthorized, BatchUnauthenticated, err.Error())
		return
	}
	key := r.Header.Get(record.IdempotencyKeyHeader)
	if !record.ValidKey(key) {
		c.refuseBatch(w, http.StatusBadRequest, BatchNoKey, fmt.Sprintf("an %s header of %d to %d characters [A-Za-z0-9._:-] is required, one per batch, the same on every retry",
			record.IdempotencyKeyHeader, record.MinKeyLen, record.MaxKeyLen))
		return
	}
	// Admission before reading: a slot first, so at most MaxInFlight
	// bodies are in memory whatever arrives.
	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	default:
		c.batches.WithLabelValues(BatchBusy).Inc()
		c.retryLater(w, "the collector is busy")
		return
	}
	if r.ContentLength > c.cfg.MaxBatchBytes {
		c.refuseBatch(w, http.StatusRequestEntityTooLarge, BatchTooLarge, fmt.Sprintf("batch of %d bytes, limit %d", r.ContentLength, c.cfg.MaxBatchBytes))
		return
	}
	body, err := c.read(w, r)
	if err != nil {
		var tooLarge *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &tooLarge):
			c.refuseBatch(w, http.StatusRequestEntityTooLarge, BatchTooLarge, fmt.Sprintf("batch over %d bytes", c.cfg.MaxBatchBytes))
		case errors.As(err, &ne) && ne.Timeout():
			c.refuseBatch(w, http.StatusRequestTimeout, BatchReadTimeout, fmt.Sprintf("batch not read within %v", c.cfg.ReadTimeout))
		default:
			c.refuseBatch(w, http.StatusBadRequest, BatchReadError, "reading the batch: "+err.Error())
		}
		return
	}
	recs, refused, errs, ok := c.parse(body, sender)
	if !ok {
		c.refuseBatch(w, http.StatusRequestEntityTooLarge, BatchTooManyRecords, fmt.Sprintf("more than %d records", c.cfg.MaxRecords))
		return
	}
	for reason, n := range refused {
		c.refused.WithLabelValues(reason).Add(float64(n))
	}
	rejected := 0
	for _, n := range refused {
		rejected += n
	}
	c.records.WithLabelValues("refused").Add(float64(rejected))
	duplicate := false
	if len(recs) > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.StoreTimeout)
		defer cancel()
		// The key is the sender's: one sender cannot claim another's.
		duplicate, err = c.store.IngestBatch(ctx, store.Batch{Key: sender + "\n" + key, Records: recs})
		if err != nil {
			c.batches.WithLabelValues(BatchStoreUnavailable).Inc()
			c.retryLater(w, "the store is unavailable: "+err.Error())
			return
		}
	}
	accepted := len(recs)
	if duplicate {
		c.records.WithLabelValues("duplicate").Add(float64(accepted))
		accepted = 0
	} else {
		c.records.WithLabelValues("accepted").Add(float64(accepted))
	}
	status := http.StatusOK
	if rejected > 0 {
		// The good records are stored; the 400 says what is wrong with
		// the others, so the filter does not send them again.
		status = http.StatusBadRequest
	}
	c.answer(w, status, Response{Accepted: accepted, Rejected: rejected, Duplicate: duplicate, Errors: errs})
}

// identify returns the sender's SPIFFE ID, as the configured mode learns it.
func (c *Collector) identify(r *http.Request) (string, error) {
	switch c.cfg.Identity {
	case ModeTLS:
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			return "", fmt.Errorf("%w: a verified client certificate is required (mTLS)", identity.ErrNoIdentity)
		}
		return identity.FromCert(r.TLS.VerifiedChains[0][0])
	case ModeXFCC:
		vs := r.Header.Values("X-Forwarded-Client-Cert")
		if len(vs) > 1 {
			return "", fmt.Errorf("%w (%d headers)", identity.ErrForgedXFCC, len(vs))
		}
		return identity.FromXFCC(r.Header.Get("X-Forwarded-Client-Cert"))
	case ModeToken:
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			return "", fmt.Errorf("%w: a bearer token is required", identity.ErrNoIdentity)
		}
		// Every token is compared, in constant time, whichever matches.
		found := ""
		for t, id := range c.cfg.Tokens {
			if subtle.ConstantTimeCompare([]byte(tok), []byte(t)) == 1 {
				found = id
			}
		}
		if found == "" {
			return "", fmt.Errorf("%w: unknown bearer token", identity.ErrNoIdentity)
		}
		return found, nil
	}
	return "", identity.ErrNoIdentity
}

// read reads an admitted batch's body: at most MaxBatchBytes, within
// ReadTimeout, into a buffer sized once when the length is announced.
func (c *Collector) read(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	// The deadline is the connection's; servers that cannot set one (the
	// HTTP/2 test servers of net/http) fall back to the server's own.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(c.cfg.ReadTimeout))
	body := http.MaxBytesReader(w, r.Body, c.cfg.MaxBatchBytes)
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1)
	}
	_, err := buf.ReadFrom(body)
	return buf.Bytes(), err
}

// parse reads JSON lines, keeping every valid record about the sender's
// workload and describing the others by line; it counts refusals by reason.
// ok is false when the batch holds more records than allowed.
func (c *Collector) parse(body []byte, sender string) (recs []record.Record, refused map[string]int, errs []string, ok bool) {
	refused = map[string]int{}
	now := c.now()
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), int(c.cfg.MaxBatchBytes))
	line, n := 0, 0
	refuse := func(reason string, err error) {
		refused[reason]++
		if len(errs) < maxErrors {
			errs = append(errs, fmt.Sprintf("line %d: %v", line, err))
		}
	}
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if n++; n > c.cfg.MaxRecords {
			return nil, nil, nil, false
		}
		var rec record.Record
		if err := json.Unmarshal(b, &rec); err != nil {
			refuse(RefusedSyntax, err)
			continue
		}
		rec.Normalize()
		if reason, err := c.check(&rec, sender, now); err != nil {
			refuse(reason, err)
			continue
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		line++
		refuse(RefusedSyntax, err)
	}
	return recs, refused, errs, true
}

// Bounds on a record's fields: what the filter ships fits well within them.
const (
	maxName    = 256
	maxPath    = 2048
	maxQuery   = models.MaxShippedQuery // the shape of a query within the filter's default inspection limit on headers
	maxHeaders = models.MaxShippedHeaders
	maxHeader  = models.MaxShippedHeaderValue
	maxBody    = models.MaxShippedBody // a form's shape: three bytes for a symbol, and the pairs past the prefix
	maxBytes   = 1 << 40
)

// check validates a record: who it is about first (the binding), then its
// time, then its numbers and fields. The reason is the first that applies.
func (c *Collector) check(r *record.Record, sender string, now time.Time) (string, error) {
	q := &r.Request
	if !c.cfg.Binding.Allows(sender, q.Destination) {
		return RefusedNotSender, fmt.Errorf("destination %.256q is not the workload of the sender %s", q.Destination, sender)
	}
	if r.TS.IsZero() || r.TSUnixNano < 0 {
		return RefusedInvalid, errors.New("ts (RFC 3339) or ts_ns (Unix nanoseconds) is required")
	}
	if d := r.TS.Sub(now); d > c.cfg.MaxSkew || d < -c.cfg.MaxSkew {
		return RefusedSkew, fmt.Errorf("ts %s is %v from the collector's clock (at most ±%v)", r.TS.Format(time.RFC3339), d.Round(time.Second), c.cfg.MaxSkew)
	}
	// Absent (0) means every request was shipped; anything else must be a
	// share an unflagged record can honestly stand for.
	if r.SampleRate != 0 && !(r.SampleRate >= record.MinSampleRate && r.SampleRate <= 1) {
		return RefusedSampleRate, fmt.Errorf("sample_rate %v is outside [%v, 1]", r.SampleRate, record.MinSampleRate)
	}
	var errs []error
	if !validMethod(q.Method) || q.Source == "" || q.Destination == "" {
		errs = append(errs, errors.New("request.method (an HTTP token), request.source and request.destination are required"))
	}
	if len(q.Source) > maxName || len(q.Destination) > maxName || strings.ContainsAny(q.Destination+q.Source, "{}") {
		errs = append(errs, fmt.Errorf("source and destination must be at most %d bytes, without braces", maxName))
	}
	if r.Route == "" || r.Route[0] != '/' || len(r.Route) > maxPath {
		errs = append(errs, fmt.Errorf("route %.64q must start with / (at most %d bytes)", r.Route, maxPath))
	}
	if len(q.Path) > maxPath || len(q.Query) > maxQuery || len(q.Body) > maxBody || len(q.Headers) > maxHeaders {
		errs = append(errs, fmt.Errorf("path ≤ %d, query ≤ %d, body ≤ %d bytes and ≤ %d headers", maxPath, maxQuery, maxBody, maxHeaders))
	}
	for _, h := range q.Headers {
		if len(h.Name) > maxName || len(h.Value) > maxHeader {
			errs = append(errs, fmt.Errorf("a header of %d+%d bytes (at most %d+%d)", len(h.Name), len(h.Value), maxName, maxHeader))
			break
		}
	}
	if !(r.Score >= 0 && r.Score <= 1) {
		errs = append(errs, fmt.Errorf("score %v is outside [0,1]", r.Score))
	}
	if q.Status != 0 && (q.Status < 100 || q.Status > 599) {
		errs = append(errs, fmt.Errorf("status %d is not an HTTP status", q.Status))
	}
	if q.RequestBytes < 0 || q.RequestBytes > maxBytes || q.ResponseBytes < 0 || q.ResponseBytes > maxBytes || q.Duration < 0 {
		errs = append(errs, errors.New("request and response bytes and the duration must be in range (≥ 0)"))
	}
	if q.FormBytes < 0 || q.FormBytes > maxBytes || q.FormBytes > 0 && len(q.Body) == 0 {
		errs = append(errs, fmt.Errorf("FormBytes %d must be in [0, %d], and 0 without a body", q.FormBytes, int64(maxBytes)))
	}
	if r.ModelSHA256 != "" && !isSHA256(r.ModelSHA256) {
		errs = append(errs, fmt.Errorf("model %.80q is not a sha256 (64 lowercase hex digits)", r.ModelSHA256))
	}
	if err := errors.Join(errs...); err != nil {
		return RefusedInvalid, err
	}
	return "", nil
}

// validMethod accepts an HTTP method token of at most 16 characters.
func validMethod(m string) bool {
	if m == "" || len(m) > 16 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (c *Collector) refuseBatch(w http.ResponseWriter, status int, reason, why string) {
	c.batches.WithLabelValues(reason).Inc()
	c.answer(w, status, Response{Errors: []string{why}})
}

func (c *Collector) retryLater(w http.ResponseWriter, why string) {
	w.Header().Set("Retry-After", strconv.Itoa(int(c.cfg.RetryAfter.Seconds()+0.5)))
	c.answer(w, http.StatusServiceUnavailable, Response{Errors: []string{why}})
}

func (c *Collector) answer(w http.ResponseWriter, status int, resp Response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

// ReadTokens reads a token file for ModeToken: one "<token> <SPIFFE ID>"
// pair a line (blank lines and # comments skipped).
func ReadTokens(data []byte) (map[string]string, error) {
	out := map[string]string{}
	var errs []error
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			errs = append(errs, fmt.Errorf("line %d: want \"<token> <SPIFFE ID>\"", n+1))
			continue
		}
		out[f[0]] = f[1]
	}
	return out, errors.Join(errs...)
}
