// Package record is the wire format of what a filter ships to the
// collector: one Record per request it keeps, one JSON object per line,
// POSTed in batches to Path under an Idempotency-Key. It is the one
// definition both sides use: the filter writes records with the appenders
// of append.go, the collector decodes them into Record, and the tests here
// hold the two to each other.
//
// It uses the standard library and models only, and builds for
// GOOS=wasip1.
package record

import (
	"time"

	"github.com/meshward/meshward/models"
)

// The batch request.
const (
	// Path is the collector's batch endpoint.
	Path = "/v1/records"
	// ContentType is a batch's media type: one record per line.
	ContentType = "application/x-ndjson"
	// IdempotencyKeyHeader carries a batch's key: the sender sends a batch
	// again under the same key, and the collector applies it once.
	IdempotencyKeyHeader = "Idempotency-Key"
	// MinKeyLen and MaxKeyLen bound a key's length (ValidKey).
	MinKeyLen, MaxKeyLen = 16, 128
)

// MinSampleRate is the smallest share of unflagged requests a filter may
// ship, and the smallest sample_rate a record may carry: an unflagged
// record stands for 1/sample_rate requests, at most 1,000.
const MinSampleRate = 0.001

// ValidKey says whether k may be a batch's Idempotency-Key: MinKeyLen to
// MaxKeyLen characters of [A-Za-z0-9._:-].
func ValidKey(k string) bool {
	if len(k) < MinKeyLen || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// Record is one request as a filter ships it and the collector stores it:
// its edge, route, what training needs (no raw body; query, header and
// body values as their shapes) and its verdict.
type Record struct {
	TS time.Time `json:"ts"`
	// TSUnixNano is TS as Unix nanoseconds, which the filter sends because
	// it is cheap to write; Normalize moves it into TS.
	TSUnixNano int64          `json:"ts_ns,omitempty"`
	Request    models.Request `json:"request"`
	Route      string         `json:"route"`
	Score      float64        `json:"score"`
	Flagged    bool           `json:"flagged"`
	// ModelSHA256 is the version of the model that scored the request
	// (empty in learn mode).
	ModelSHA256 string `json:"model,omitempty"`
	// SampleRate is the share of unflagged requests the filter ships (0 or
	// absent: all), so an unflagged record stands for 1/SampleRate requests
	// when flagged rates are estimated.
	SampleRate float64 `json:"sample_rate,omitempty"`
	// The policy's decision about a request flagged at the request phase
	// (the filter's graduated enforcement and exceptions, package
	// enforcement; AppendDecision writes it): its reasons; the reason
	// enforce denies it for (Deny; Enforced when the filter did), and the
	// one the reasons alone deny before the exceptions (WouldDeny: set
	// without Deny, an exception saved the request); the exceptions that set a
	// reason aside; the parameter and value shape behind a value reason.
	// meshward preview counts them; the trainer learns a request the
	// exceptions explain.
	Reasons   []string `json:"reasons,omitempty"`
	Deny      string   `json:"deny,omitempty"`
	Enforced  bool     `json:"enforced,omitempty"`
	WouldDeny string   `json:"would_deny,omitempty"`
	Excepted  []string `json:"excepted,omitempty"`
	DenyParam string   `json:"deny_param,omitempty"`
	DenyShape string   `json:"deny_shape,omitempty"`
	// Received is when the control plane took the record in (the store
	// sets it from the observation stream's entry id, which Redis assigns):
	// the time decisions use, since TS is whatever the sender claims.
	Received time.Time `json:"-"`
}

// Weight is how many requests a record stands for.
func (r *Record) Weight() float64 {
	if r.Flagged || r.SampleRate <= 0 || r.SampleRate >= 1 {
		return 1
	}
	return 1 / r.SampleRate
}

// Normalize fills TS from TSUnixNano when only the latter is set.
func (r *Record) Normalize() {
	if r.TS.IsZero() && r.TSUnixNano > 0 {
		r.TS = time.Unix(0, r.TSUnixNano).UTC()
	}
}
