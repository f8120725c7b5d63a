// Package exception is the control plane's side of the exceptions an
// operator grants (meshward allow, POST /api/v1/exceptions): one exception
// is an enforcement.Rule — what it lets through, for which workload or the
// whole mesh, until when — with who granted it and why. The admin API
// validates it (every field named on refusal), the store keeps it, and each
// workload's filters receive the rules that hold for them (For) with the
// next xDS or WasmPlugin update; the trainer teaches the next model what
// they let through.
package exception

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/filter/pluginconfig"
)

// Bounds.
const (
	// MaxReasonBytes bounds why an exception was granted.
	MaxReasonBytes = 1024
	// DefaultMax is the default cap on stored exceptions (-max-exceptions).
	DefaultMax = 200
)

// Sentinel errors of the fields the control plane adds (the rule's own are
// enforcement's).
var (
	// ErrReason: why the exception was granted is required.
	ErrReason = errors.New("reason")
	// ErrAuthor: who granted it (the authenticated caller).
	ErrAuthor = errors.New("author")
	// ErrUnknownWorkload wraps enforcement.ErrWorkload for a workload
	// meshward has never heard of.
	ErrUnknownWorkload = fmt.Errorf("%w: unknown", enforcement.ErrWorkload)
)

// Exception is one granted exception.
type Exception struct {
	enforcement.Rule
	// Author is who granted it: the admin API's authenticated caller.
	Author string `json:"author"`
	// Reason says why this is fine.
	Reason string `json:"reason"`
	// Created is when the control plane stored it.
	Created time.Time `json:"created"`
}

// Request is what POST /api/v1/exceptions takes: the rule (its id
// optional: the control plane names it), why, and its expiry — a time or
// a duration from now (TTL, "24h").
type Request struct {
	enforcement.Rule
	Reason string `json:"reason"`
	TTL    string `json:"ttl,omitempty"`
}

// New builds the exception a request asks for, granted by author at now,
// and validates it: known says whether a workload exists. The error names
// every wrong field.
func New(req Request, author string, now time.Time, known func(string) bool) (*Exception, error) {
	e := &Exception{Rule: req.Rule, Author: author, Reason: strings.TrimSpace(req.Reason), Created: now.UTC()}
	var errs []error
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%w: ttl %q is not a duration (24h, 30m)", enforcement.ErrExpires, req.TTL))
		case !req.Expires.IsZero():
			errs = append(errs, fmt.Errorf("%w: give expires or ttl, not both", enforcement.ErrExpires))
		default:
			e.Expires = now.Add(d).UTC()
		}
	}
	if e.ID == "" {
		e.ID = NewID()
	}
	e.Expires = e.Expires.UTC()
	if err := e.Validate(now, known); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return e, nil
}

// Validate reports every problem of the exception, each naming its field.
func (e *Exception) Validate(now time.Time, known func(string) bool) error {
	var errs []error
	if err := e.Rule.Validate(now); err != nil {
		errs = append(errs, err)
	}
	if e.Workload != enforcement.Mesh && e.Workload != "" && known != nil && !known(e.Workload) {
		errs = append(errs, fmt.Errorf("%w: %.80q is not a workload meshward knows (one with a model section, records or a connected sidecar; %q for every workload)",
			ErrUnknownWorkload, e.Workload, enforcement.Mesh))
	}
	switch {
	case e.Reason == "":
		errs = append(errs, fmt.Errorf("%w: required: say why this is fine (it goes in the audit log)", ErrReason))
	case len(e.Reason) > MaxReasonBytes || strings.ContainsFunc(e.Reason, func(r rune) bool { return r < ' ' || r == 0x7f }):
		errs = append(errs, fmt.Errorf("%w: at most %d bytes, without control characters", ErrReason, MaxReasonBytes))
	}
	if e.Author == "" {
		errs = append(errs, fmt.Errorf("%w: unknown", ErrAuthor))
	}
	return errors.Join(errs...)
}

// NewID names a new exception: "exc-" and 12 random hex digits.
func NewID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "exc-" + hex.EncodeToString(b[:])
}

// Decode reads the stored exceptions (by id, JSON), skipping any that does
// not decode (reported in the error).
func Decode(raw map[string][]byte) ([]Exception, error) {
	out := make([]Exception, 0, len(raw))
	var errs []error
	for id, b := range raw {
		var e Exception
		if err := json.Unmarshal(b, &e); err != nil || e.ID != id {
			errs = append(errs, fmt.Errorf("stored exception %q does not decode: %v", id, err))
			continue
		}
		out = append(out, e)
	}
	Sort(out)
	return out, errors.Join(errs...)
}

// Sort orders exceptions by id.
func Sort(es []Exception) {
	sort.Slice(es, func(i, j int) bool { return es[i].ID < es[j].ID })
}

// Active returns the exceptions not expired at now.
func Active(es []Exception, now time.Time) []Exception {
	var out []Exception
	for _, e := range es {
		if now.Before(e.Expires) {
			out = append(out, e)
		}
	}
	return out
}

// For returns the rules a workload's filters receive: the mesh's and its
// own, not expired at now, by id; at most pluginconfig.MaxExceptions (those
// expiring last are dropped first: the cap on stored exceptions keeps
// within it).
func For(es []Exception, workload string, now time.Time) []enforcement.Rule {
	var out []enforcement.Rule
	for _, e := range es {
		if (e.Workload == enforcement.Mesh || e.Workload == workload) && now.Before(e.Expires) {
			out = append(out, e.Rule)
		}
	}
	if len(out) > pluginconfig.MaxExceptions {
		sort.SliceStable(out, func(i, j int) bool { return out[i].Expires.Before(out[j].Expires) })
		out = out[:pluginconfig.MaxExceptions]
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	}
	return out
}

// Describe says in a few words what an exception lets through, for audit
// lines, Events and `meshward status`.
func (e *Exception) Describe() string {
	var parts []string
	if e.Caller != "" {
		parts = append(parts, "caller "+e.Caller)
	}
	if e.Method != "" || e.Route != "" {
		parts = append(parts, "route "+strings.TrimSpace(e.Method+" "+e.Route))
	}
	if e.Param != "" {
		parts = append(parts, "param "+e.Param)
	}
	if e.Shape != "" {
		parts = append(parts, "shape "+e.Shape)
	}
	if e.ReasonCode != "" {
		parts = append(parts, "reason_code "+e.ReasonCode)
	}
	w := e.Workload
	if w == enforcement.Mesh {
		w = "every workload"
	}
	return strings.Join(parts, ", ") + " → " + w
}
