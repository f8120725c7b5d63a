// Package collector is the HTTP endpoint the filters ship their records to.
// A batch is JSON lines of store.Record; the collector authenticates it
// (bearer token), bounds it, validates every record, stores the good ones
// even when others are bad (and says which are bad, by line), and pushes back
// with 503 and Retry-After when the store is slow or down.
package collector

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshward/meshward/control-plane/store"
)

// Config is everything the collector takes. Defaults in DefaultConfig.
type Config struct {
	// Token is the bearer token filters present; required.
	Token string
	// MaxBatchBytes bounds a batch's body.
	MaxBatchBytes int64
	// MaxRecords bounds the records of one batch.
	MaxRecords int
	// MaxInFlight bounds the batches being stored at once; beyond it the
	// collector answers 503 with Retry-After.
	MaxInFlight int
	// StoreTimeout bounds storing one batch.
	StoreTimeout time.Duration
	// RetryAfter is what a 503 tells the filter to wait.
	RetryAfter time.Duration
}

// DefaultConfig returns the defaults, in one place.
func DefaultConfig() Config {
	return Config{MaxBatchBytes: 4 << 20, MaxRecords: 10_000, MaxInFlight: 8, StoreTimeout: 5 * time.Second, RetryAfter: 2 * time.Second}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if len(c.Token) < 16 {
		errs = append(errs, errors.New("token: at least 16 characters are required"))
	}
	if c.MaxBatchBytes < 1024 || c.MaxRecords < 1 || c.MaxInFlight < 1 {
		errs = append(errs, errors.New("max_batch_bytes (≥ 1 KiB), max_records and max_in_flight must be positive"))
	}
	if c.StoreTimeout <= 0 || c.RetryAfter <= 0 {
		errs = append(errs, errors.New("store_timeout and retry_after must be positive"))
	}
	return errors.Join(errs...)
}

// Ingester is what the collector stores batches in (the Redis store).
type Ingester interface {
	Ingest(ctx context.Context, recs []store.Record) error
}

// Collector serves POST /v1/records.
type Collector struct {
	cfg   Config
	store Ingester
	slots chan struct{}
}

// New returns a collector, or the configuration's problems.
func New(cfg Config, st Ingester) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Collector{cfg: cfg, store: st, slots: make(chan struct{}, cfg.MaxInFlight)}, nil
}

// Response is the body of every answer.
type Response struct {
	Accepted int      `json:"accepted"`
	Rejected int      `json:"rejected"`
	Errors   []string `json:"errors,omitempty"`
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
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(c.cfg.Token)) != 1 {
		c.answer(w, http.StatusUnauthorized, Response{Errors: []string{"missing or wrong bearer token"}})
		return
	}
	if r.ContentLength > c.cfg.MaxBatchBytes {
		c.answer(w, http.StatusRequestEntityTooLarge, Response{Errors: []string{fmt.Sprintf("batch of %d bytes, limit %d", r.ContentLength, c.cfg.MaxBatchBytes)}})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.cfg.MaxBatchBytes))
	if err != nil {
		c.answer(w, http.StatusRequestEntityTooLarge, Response{Errors: []string{fmt.Sprintf("batch over %d bytes: %v", c.cfg.MaxBatchBytes, err)}})
		return
	}
	recs, rejected, errs := c.parse(body)
	if len(recs) > c.cfg.MaxRecords {
		c.answer(w, http.StatusRequestEntityTooLarge, Response{Errors: []string{fmt.Sprintf("%d records, limit %d", len(recs), c.cfg.MaxRecords)}})
		return
	}
	// Backpressure: never queue without bound behind a slow store.
	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	default:
		c.retryLater(w, "the collector is busy")
		return
	}
	if len(recs) > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.StoreTimeout)
		defer cancel()
		if err := c.store.Ingest(ctx, recs); err != nil {
			c.retryLater(w, "the store is unavailable: "+err.Error())
			return
		}
	}
	status := http.StatusOK
	if rejected > 0 {
		// The good records are stored; the 400 says what is wrong with
		// the others, so the filter does not send them again.
		status = http.StatusBadRequest
	}
	c.answer(w, status, Response{Accepted: len(recs), Rejected: rejected, Errors: errs})
}

// parse reads JSON lines, keeping every valid record and describing the
// invalid ones by line.
func (c *Collector) parse(body []byte) (recs []store.Record, rejected int, errs []string) {
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), int(c.cfg.MaxBatchBytes))
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var rec store.Record
		err := json.Unmarshal(b, &rec)
		if err == nil {
			rec.Normalize()
			err = validate(&rec)
		}
		if err != nil {
			rejected++
			if len(errs) < maxErrors {
				errs = append(errs, fmt.Sprintf("line %d: %v", line, err))
			}
			continue
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		rejected++
		errs = append(errs, fmt.Sprintf("line %d: %v", line+1, err))
	}
	return recs, rejected, errs
}

func validate(r *store.Record) error {
	var errs []error
	q := &r.Request
	if q.Method == "" || q.Destination == "" || q.Source == "" {
		errs = append(errs, errors.New("request.method, request.source and request.destination are required"))
	}
	if r.Route == "" || r.Route[0] != '/' {
		errs = append(errs, fmt.Errorf("route %q must start with /", r.Route))
	}
	if r.TS.IsZero() {
		errs = append(errs, errors.New("ts (RFC 3339) or ts_ns (Unix nanoseconds) is required"))
	}
	if !(r.Score >= 0 && r.Score <= 1) {
		errs = append(errs, fmt.Errorf("score %v is outside [0,1]", r.Score))
	}
	if !(r.SampleRate >= 0 && r.SampleRate <= 1) {
		errs = append(errs, fmt.Errorf("sample_rate %v is outside [0,1]", r.SampleRate))
	}
	if r.ModelSHA256 != "" && !isSHA256(r.ModelSHA256) {
		errs = append(errs, fmt.Errorf("model %q is not a sha256 (64 lowercase hex digits)", r.ModelSHA256))
	}
	if strings.ContainsAny(q.Destination+q.Source, "{}") {
		errs = append(errs, errors.New("source and destination must not contain braces"))
	}
	return errors.Join(errs...)
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

func (c *Collector) retryLater(w http.ResponseWriter, why string) {
	w.Header().Set("Retry-After", strconv.Itoa(int(c.cfg.RetryAfter.Seconds()+0.5)))
	c.answer(w, http.StatusServiceUnavailable, Response{Errors: []string{why}})
}

func (c *Collector) answer(w http.ResponseWriter, status int, resp Response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}
