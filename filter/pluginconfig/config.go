// Package pluginconfig is the meshward filter's plugin configuration: the
// JSON document Envoy hands the filter (WasmPlugin.pluginConfig, or the Wasm
// PluginConfig.configuration delivered by ECDS). The filter parses it in
// OnPluginStart; the control plane builds it with the same types, so the two
// cannot drift.
package pluginconfig

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// Mode is what the filter does with a verdict.
type Mode string

// The modes, from least to most intrusive.
const (
	// ModeLearn records traffic only; nothing is scored or changed.
	ModeLearn Mode = "learn"
	// ModeMonitor scores every request, adds the score header and counts
	// flagged requests, but lets everything through.
	ModeMonitor Mode = "monitor"
	// ModeEnforce denies requests scored above the threshold with a 403.
	ModeEnforce Mode = "enforce"
)

// LimitAction is what enforce mode does with a request beyond the
// inspection limits (max_body_bytes, max_headers, max_header_bytes), as
// ModSecurity's SecRequestBodyLimitAction (Reject, ProcessPartial).
type LimitAction string

// The limit actions.
const (
	// LimitDeny answers 413 (a body) or 431 (headers) without letting the
	// request upstream: what cannot be inspected does not pass.
	LimitDeny LimitAction = "deny"
	// LimitInspect judges what fits within the limits and lets the rest
	// through uninspected.
	LimitInspect LimitAction = "inspect"
)

// Defaults, in one place.
const (
	DefaultMode        = ModeLearn
	DefaultScoreHeader = "x-meshward-score"
	DefaultSampleRate  = 0.05
	DefaultMaxBuffer   = 2000
	// DefaultMaxBufferBytes bounds the bytes of the records waiting: a
	// record can carry 64 headers of up to 4 KiB of shape each, and
	// 2,000 such would not fit a VM's memory.
	DefaultMaxBufferBytes = 4 << 20
	DefaultBatchSize      = 500
	// DefaultMaxBodyBytes is how much of a body is inspected: a form of
	// a thousand fields, a JSON document of some size.
	DefaultMaxBodyBytes = models.DefaultBodyLimit
	// DefaultMaxHeaders and DefaultMaxHeaderBytes bound the headers
	// inspected: Envoy's own defaults (max_request_headers_count 100,
	// max_request_headers_kb 60) with room.
	DefaultMaxHeaders     = 128
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultOverLimit denies what cannot be inspected, in enforce mode.
	DefaultOverLimit = LimitDeny
	// MaxConfigBytes bounds the whole document (the model section
	// dominates it: base64 of up to models.MaxSectionBytes).
	MaxConfigBytes = 2 * models.MaxSectionBytes
	// MaxExceptions bounds the exceptions one configuration carries.
	MaxExceptions = 1000
)

// Sentinel errors; every validation error wraps one, so callers can tell
// which field was wrong with errors.Is.
var (
	ErrSyntax           = errors.New("configuration is not a valid JSON object")
	ErrMode             = errors.New("mode")
	ErrThreshold        = errors.New("threshold")
	ErrModel            = errors.New("model")
	ErrCollectorCluster = errors.New("collector_cluster")
	ErrWorkload         = errors.New("workload")
	ErrScoreHeader      = errors.New("score_header")
	ErrShipping         = errors.New("shipping")
	ErrLimits           = errors.New("limits")
	ErrDenyReasons      = enforcement.ErrDenyReasons
	ErrExceptions       = errors.New("exceptions")
	ErrValueKey         = errors.New("value_key")
)

// Config is the plugin configuration as written by a person or the control
// plane. Every field is optional except as Validate says.
type Config struct {
	// Mode is learn, monitor or enforce (default learn).
	Mode Mode `json:"mode,omitempty"`
	// Threshold overrides the model's calibrated threshold: requests scored
	// strictly above it are flagged (monitor) or denied (enforce). In (0,1].
	Threshold *float64 `json:"threshold,omitempty"`
	// Model is the workload's section of the model (models.EncodeSection;
	// the fallback section also serves any workload), base64 (standard
	// alphabet). Required in monitor and enforce. A whole-mesh model, or the
	// section of another workload, is refused.
	Model string `json:"model,omitempty"`
	// CollectorCluster is the Envoy cluster the filter ships records to;
	// empty ships nothing.
	CollectorCluster string `json:"collector_cluster,omitempty"`
	// CollectorToken is refused: a credential never goes in a plugin
	// configuration, which every reader of a config dump sees. The
	// collector authenticates the sidecar by its mTLS identity instead
	// (docs/security.md). The field remains so that a configuration
	// still carrying one is refused by name rather than as unknown.
	CollectorToken string `json:"collector_token,omitempty"`
	// ValueKey is the mesh's value key, 32 hex digits (the control plane
	// writes it; see models.ValueKey): with it, a record carries a keyed
	// digest beside the shape of each short query and form value, and
	// scoring looks such values up among the digests the model
	// enumerates. Without it, records carry shapes alone.
	ValueKey string `json:"value_key,omitempty"`
	// SampleRate is the share of unflagged requests shipped (flagged ones
	// always are); default 0.05.
	SampleRate *float64 `json:"sample_rate,omitempty"`
	// MaxBuffer bounds the records waiting to be shipped (default 2000);
	// BatchSize the records of one batch (default 500).
	MaxBuffer int `json:"max_buffer,omitempty"`
	BatchSize int `json:"batch_size,omitempty"`
	// MaxBufferBytes bounds the bytes of the records waiting to be shipped
	// (default 4 MiB, at most 64 MiB); past it a record is dropped and
	// counted, as past MaxBuffer.
	MaxBufferBytes int `json:"max_buffer_bytes,omitempty"`
	// Workload is the local workload's identity (the destination of every
	// request this filter sees). When empty, the filter reads it from the
	// node metadata (Istio's WORKLOAD_NAME and NAMESPACE).
	Workload string `json:"workload,omitempty"`
	// ScoreHeader is the request header that carries the score upstream in
	// monitor and enforce (default x-meshward-score).
	ScoreHeader string `json:"score_header,omitempty"`
	// ResponseScore adds the final score (with the response's status and
	// size taken into account) and reasons to the response as well, under
	// the same header names. It tells clients how they were judged: for
	// replay and debugging, not for production.
	ResponseScore bool `json:"response_score,omitempty"`
	// MaxBodyBytes is how much of a request body the filter inspects, as
	// it passes (default 65536; 1024 to 1048576). The proxy buffers up to
	// this much of a body while it is judged, so keep it below the
	// listener's per_connection_buffer_limit_bytes (1 MiB by default).
	MaxBodyBytes int `json:"max_body_bytes,omitempty"`
	// MaxHeaders and MaxHeaderBytes bound the headers inspected: their
	// count (default 128; 1 to 1024) and the bytes of their names and
	// values (default 65536; 1024 to 1048576).
	MaxHeaders     int `json:"max_headers,omitempty"`
	MaxHeaderBytes int `json:"max_header_bytes,omitempty"`
	// OverLimit is what enforce mode does with a request beyond those
	// limits: deny (the default: 413 for a body, 431 for headers) or
	// inspect (judge what fits, let the rest through). Monitor mode always
	// judges what fits. Bytes not inspected count in
	// meshward_uninspected_bytes_total either way.
	OverLimit LimitAction `json:"over_limit,omitempty"`
	// DenyReasons are the reasons enforce mode denies a flagged request
	// for (names, or the groups default, values, content, structure,
	// size, none); absent: the graduated default (content and values, and a body
	// far larger than its route's; never structural novelty, which the
	// lateral-movement detector judges). ["none"] denies nothing inline.
	DenyReasons []string `json:"deny_reasons,omitempty"`
	// Exceptions are what operators let through (meshward allow), applied
	// before a request is denied: the workload's own and the mesh's.
	Exceptions []enforcement.Rule `json:"exceptions,omitempty"`
}

// Settings is a validated configuration, ready to use.
type Settings struct {
	Mode      Mode
	Threshold float64
	// Model is the section decoded (Model.SectionFor says whose); nil in
	// learn mode without a model.
	Model *models.Model
	// Section is the model's section for Workload (or its global fallback);
	// nil when the model has neither, and every request is then unscored.
	Section *models.Workload
	// ValueKey digests short values (value_key; unset without one), and
	// KeyMismatch says the model enumerates digests made with another key
	// (or with one when none is set): those values are judged by their
	// shapes until a model trained with this key arrives.
	ValueKey         models.ValueKey
	KeyMismatch      bool
	CollectorCluster string
	Workload         string
	ScoreHeader      string
	ResponseScore    bool
	SampleRate       float64
	MaxBuffer        int
	BatchSize        int
	MaxBufferBytes   int
	// CollectorTimeoutMS bounds one batch's call.
	CollectorTimeoutMS uint32
	// The inspection limits and what enforce mode does beyond them.
	MaxBodyBytes, MaxHeaders, MaxHeaderBytes int
	OverLimit                                LimitAction
	// Policy is what enforce mode denies (and monitor mode reports it
	// would): deny_reasons and the exceptions.
	Policy enforcement.Policy
}

// Parse decodes and validates a configuration. fallbackWorkload is used when
// the document names no workload (the filter passes the node metadata).
// The error lists every problem found, each prefixed by its field.
func Parse(data []byte, fallbackWorkload string) (*Settings, error) {
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrSyntax, len(data), MaxConfigBytes)
	}
	var c Config
	if len(bytes.TrimSpace(data)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("%w: trailing data after the object", ErrSyntax)
		}
	}
	return c.Settings(fallbackWorkload)
}

// Settings validates c and resolves its defaults.
func (c *Config) Settings(fallbackWorkload string) (*Settings, error) {
	s := &Settings{
		Mode:               c.Mode,
		CollectorCluster:   c.CollectorCluster,
		Workload:           c.Workload,
		ScoreHeader:        c.ScoreHeader,
		ResponseScore:      c.ResponseScore,
		SampleRate:         DefaultSampleRate,
		MaxBuffer:          c.MaxBuffer,
		MaxBufferBytes:     c.MaxBufferBytes,
		BatchSize:          c.BatchSize,
		CollectorTimeoutMS: 2000,
		MaxBodyBytes:       c.MaxBodyBytes,
		MaxHeaders:         c.MaxHeaders,
		MaxHeaderBytes:     c.MaxHeaderBytes,
		OverLimit:          c.OverLimit,
	}
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if s.MaxHeaders == 0 {
		s.MaxHeaders = DefaultMaxHeaders
	}
	if s.MaxHeaderBytes == 0 {
		s.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if s.OverLimit == "" {
		s.OverLimit = DefaultOverLimit
	}
	if c.SampleRate != nil {
		s.SampleRate = *c.SampleRate
	}
	if s.MaxBuffer == 0 {
		s.MaxBuffer = DefaultMaxBuffer
	}
	if s.BatchSize == 0 {
		s.BatchSize = DefaultBatchSize
	}
	if s.MaxBufferBytes == 0 {
		s.MaxBufferBytes = DefaultMaxBufferBytes
	}
	if s.Mode == "" {
		s.Mode = DefaultMode
	}
	if s.ScoreHeader == "" {
		s.ScoreHeader = DefaultScoreHeader
	}
	if s.Workload == "" {
		s.Workload = fallbackWorkload
	}
	var errs []error
	switch s.Mode {
	case ModeLearn, ModeMonitor, ModeEnforce:
	default:
		errs = append(errs, fmt.Errorf("%w: %q is not one of learn, monitor, enforce", ErrMode, c.Mode))
	}
	if c.Model != "" {
		raw, err := base64.StdEncoding.DecodeString(c.Model)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: not standard base64: %v", ErrModel, err))
		} else if s.Model, err = models.DecodeSection(raw); err != nil {
			errs = append(errs, fmt.Errorf("%w: %v", ErrModel, err))
		}
	} else if s.Mode == ModeMonitor || s.Mode == ModeEnforce {
		errs = append(errs, fmt.Errorf("%w: required in %s mode", ErrModel, s.Mode))
	}
	if c.ValueKey != "" {
		k, err := models.ParseValueKey(c.ValueKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %v", ErrValueKey, err))
		}
		s.ValueKey = k
	}
	if s.Model != nil {
		s.KeyMismatch = s.Model.SetValueKey(s.ValueKey) > 0
	}
	switch {
	case c.Threshold != nil:
		if t := *c.Threshold; !(t > 0 && t <= 1) {
			errs = append(errs, fmt.Errorf("%w: %v is not in (0,1]", ErrThreshold, t))
		}
		s.Threshold = *c.Threshold
	case s.Model != nil:
		s.Threshold = s.Model.Meta.Threshold
	}
	if strings.ContainsFunc(c.CollectorCluster, isSpaceOrControl) {
		errs = append(errs, fmt.Errorf("%w: %q contains white space or control characters", ErrCollectorCluster, c.CollectorCluster))
	}
	if c.CollectorToken != "" {
		errs = append(errs, fmt.Errorf("%w: collector_token is no longer accepted: credentials never go in a plugin configuration (the collector authenticates the sidecar by its mTLS identity)", ErrCollectorCluster))
	}
	// Besides 0 (none), at least the wire's minimum: the collector refuses
	// a record standing for more than 1/record.MinSampleRate requests.
	if !(s.SampleRate == 0 || s.SampleRate >= record.MinSampleRate && s.SampleRate <= 1) {
		errs = append(errs, fmt.Errorf("%w: sample_rate %v is not 0 or in [%v,1]", ErrShipping, s.SampleRate, record.MinSampleRate))
	}
	if s.MaxBuffer < 1 || s.MaxBuffer > 100_000 || s.BatchSize < 1 || s.BatchSize > s.MaxBuffer {
		errs = append(errs, fmt.Errorf("%w: max_buffer %d must be in [1,100000] and batch_size %d in [1,max_buffer]", ErrShipping, s.MaxBuffer, s.BatchSize))
	}
	if s.MaxBufferBytes < 64<<10 || s.MaxBufferBytes > 64<<20 {
		errs = append(errs, fmt.Errorf("%w: max_buffer_bytes %d must be in [65536,67108864]", ErrShipping, s.MaxBufferBytes))
	}
	switch {
	case s.Workload == "":
		errs = append(errs, fmt.Errorf("%w: not set, and the node metadata has no WORKLOAD_NAME", ErrWorkload))
	case len(s.Workload) > 253 || strings.ContainsFunc(s.Workload, isSpaceOrControl):
		errs = append(errs, fmt.Errorf("%w: %q is not a workload name", ErrWorkload, s.Workload))
	}
	if s.MaxBodyBytes < 1024 || s.MaxBodyBytes > models.MaxBodyLimit {
		errs = append(errs, fmt.Errorf("%w: max_body_bytes %d is not in [1024,%d]", ErrLimits, s.MaxBodyBytes, models.MaxBodyLimit))
	}
	if s.MaxHeaders < 1 || s.MaxHeaders > 1024 {
		errs = append(errs, fmt.Errorf("%w: max_headers %d is not in [1,1024]", ErrLimits, s.MaxHeaders))
	}
	if s.MaxHeaderBytes < 1024 || s.MaxHeaderBytes > 1<<20 {
		errs = append(errs, fmt.Errorf("%w: max_header_bytes %d is not in [1024,1048576]", ErrLimits, s.MaxHeaderBytes))
	}
	switch s.OverLimit {
	case LimitDeny, LimitInspect:
	default:
		errs = append(errs, fmt.Errorf("%w: over_limit %q is not one of deny, inspect", ErrLimits, s.OverLimit))
	}
	if s.Model != nil && s.Workload != "" && s.Model.SectionFor != models.GlobalWorkload && s.Model.SectionFor != s.Workload {
		errs = append(errs, fmt.Errorf("%w: the section is for workload %q, this filter serves workload %q (each workload takes its own section: meshward model config -workload %s)",
			ErrModel, s.Model.SectionFor, s.Workload, s.Workload))
	}
	if !validHeaderName(s.ScoreHeader) {
		errs = append(errs, fmt.Errorf("%w: %q is not a lower-case HTTP header name", ErrScoreHeader, s.ScoreHeader))
	}
	errs = append(errs, c.policy(s)...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.Section = s.Model.Workload(s.Workload)
	return s, nil
}

// policy reads deny_reasons and the exceptions into s.Policy.
func (c *Config) policy(s *Settings) []error {
	var errs []error
	s.Policy.Workload = s.Workload
	s.Policy.Deny = models.DefaultDenyReasons()
	if c.DenyReasons != nil {
		set, err := enforcement.ParseDenyReasons(c.DenyReasons)
		if err != nil {
			errs = append(errs, err)
		}
		s.Policy.Deny = set
	}
	if len(c.Exceptions) > MaxExceptions {
		return append(errs, fmt.Errorf("%w: %d, at most %d", ErrExceptions, len(c.Exceptions), MaxExceptions))
	}
	seen := map[string]bool{}
	for i := range c.Exceptions {
		r := &c.Exceptions[i]
		// An exception past its expiry is kept and ignored: the filter's
		// clock and the control plane's differ.
		if err := r.CheckForm(); err != nil {
			errs = append(errs, fmt.Errorf("%w[%d]: %w", ErrExceptions, i, err))
			continue
		}
		if r.Workload != enforcement.Mesh && r.Workload != s.Workload {
			errs = append(errs, fmt.Errorf("%w[%d]: workload: %q, this filter serves %q", ErrExceptions, i, r.Workload, s.Workload))
		}
		if seen[r.ID] {
			errs = append(errs, fmt.Errorf("%w[%d]: id: %q is given twice", ErrExceptions, i, r.ID))
		}
		seen[r.ID] = true
	}
	s.Policy.Rules = c.Exceptions
	return errs
}

// Encode returns the configuration as the JSON document the filter reads.
func (c *Config) Encode() ([]byte, error) { return json.Marshal(c) }

// WithModel sets Model to the base64 encoding of an encoded section.
func (c *Config) WithModel(encoded []byte) *Config {
	c.Model = base64.StdEncoding.EncodeToString(encoded)
	return c
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

func validHeaderName(h string) bool {
	if h == "" || len(h) > 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
