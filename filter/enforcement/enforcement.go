// Package enforcement is what enforce mode denies: the graduated policy
// (deny only on what the request itself shows, docs/configuration.md) and
// the exceptions an operator grants ("this is fine"), applied to a flagged
// request's verdict before it is denied. The filter decides with it in the
// sidecar, replay offline and the control plane for previews and training,
// so the three agree. It builds for wasip1 and uses the standard library
// and models only.
package enforcement

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshward/meshward/models"
)

// Mesh is the workload of an exception that holds for every workload.
const Mesh = "*"

// Bounds of an exception's fields.
const (
	MaxIDBytes      = 64
	MaxPatternBytes = 512
	MaxParamBytes   = 128
	// MaxStars bounds the wildcards of one pattern.
	MaxStars = 4
	// MaxLifetime is the furthest an exception may expire: every exception
	// ends, and is granted again if still needed.
	MaxLifetime = 366 * 24 * time.Hour
)

// Sentinel errors, one per field of a Rule: an error wraps the field's, so
// errors.Is tells which field was wrong, and its text starts with the
// field's name.
var (
	ErrID         = errors.New("id")
	ErrWorkload   = errors.New("workload")
	ErrCaller     = errors.New("caller")
	ErrMethod     = errors.New("method")
	ErrRoute      = errors.New("route")
	ErrParam      = errors.New("param")
	ErrShape      = errors.New("shape")
	ErrReasonCode = errors.New("reason_code")
	ErrExpires    = errors.New("expires")
	// ErrDenyReasons is the plugin configuration's deny_reasons.
	ErrDenyReasons = errors.New("deny_reasons")
	// ErrNothing: an exception must say what it lets through.
	ErrNothing = errors.New("an exception must name a caller, route, param, shape or reason_code")
)

// Rule is one exception as the filter applies it. Caller and Route are
// patterns where * stands for any run of characters; every field given
// must match for the exception to apply. What it sets aside: the reason it
// names (ReasonCode); else, when it names a parameter or a shape, the value
// and content reasons of a request whose value least like its training is
// that parameter's; else (an edge or a route) the structural reasons.
type Rule struct {
	// ID names the exception (lower-case letters, digits and dashes).
	ID string `json:"id"`
	// Workload is the destination workload ("name.namespace"), or Mesh.
	Workload string `json:"workload"`
	// Caller is the source principal (spiffe://…, a workload name or an
	// address), as the filter identifies it.
	Caller string `json:"caller,omitempty"`
	// Method is an HTTP method; Route a route template (as records and
	// previews show it: /users/{num}/orders).
	Method string `json:"method,omitempty"`
	Route  string `json:"route,omitempty"`
	// Param names a parameter (query, form, JSON body key or header) whose
	// value drove a value reason; Shape is that value's shape (each
	// character as its class's representative: a A 0 ' < ( / . , - = ; !
	// and space), * for any run.
	Param string `json:"param,omitempty"`
	Shape string `json:"shape,omitempty"`
	// ReasonCode is a reason (value_shape, keywords, new_caller, …) set
	// aside.
	ReasonCode string `json:"reason_code,omitempty"`
	// Expires is when the exception stops applying.
	Expires time.Time `json:"expires"`
}

// Validate reports every problem of the rule, each naming its field.
// Expiry is judged against now.
func (r *Rule) Validate(now time.Time) error { return r.validate(now, true) }

// CheckForm is Validate but for when the rule expires: a filter holds
// rules past their expiry (its clock and the control plane's differ) and
// ignores them.
func (r *Rule) CheckForm() error { return r.validate(time.Time{}, false) }

func (r *Rule) validate(now time.Time, expiry bool) error {
	var errs []error
	if !validID(r.ID) {
		errs = append(errs, fmt.Errorf("%w: %.80q must be 1 to %d lower-case letters, digits or dashes", ErrID, r.ID, MaxIDBytes))
	}
	if r.Workload != Mesh && (r.Workload == "" || len(r.Workload) > 253 || strings.ContainsFunc(r.Workload, spaceOrControl) || strings.Contains(r.Workload, "*")) {
		errs = append(errs, fmt.Errorf("%w: %.80q is neither a workload (name.namespace) nor %q (every workload)", ErrWorkload, r.Workload, Mesh))
	}
	if r.Caller != "" {
		if err := checkPattern(r.Caller); err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrCaller, err))
		}
	}
	if r.Method != "" && !validMethod(r.Method) {
		errs = append(errs, fmt.Errorf("%w: %.40q is not an HTTP method (upper-case letters)", ErrMethod, r.Method))
	}
	if r.Route != "" {
		if err := checkPattern(r.Route); err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrRoute, err))
		} else if r.Route[0] != '/' && r.Route[0] != '*' {
			errs = append(errs, fmt.Errorf("%w: %.80q must start with / (a route template such as /users/{num})", ErrRoute, r.Route))
		}
	}
	if r.Param != "" && (len(r.Param) > MaxParamBytes || strings.ContainsFunc(r.Param, spaceOrControl)) {
		errs = append(errs, fmt.Errorf("%w: %.80q must be at most %d bytes, without white space or control characters", ErrParam, r.Param, MaxParamBytes))
	}
	if r.Shape != "" {
		if err := checkShape(r.Shape); err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrShape, err))
		}
	}
	if r.ReasonCode != "" {
		if _, ok := models.ParseReason(r.ReasonCode); !ok {
			errs = append(errs, fmt.Errorf("%w: %.40q is not a reason (one of %s)", ErrReasonCode, r.ReasonCode, strings.Join(models.ReasonNames(), ", ")))
		}
	}
	switch {
	case r.Expires.IsZero():
		errs = append(errs, fmt.Errorf("%w: required: every exception expires", ErrExpires))
	case !expiry:
	case !r.Expires.After(now):
		errs = append(errs, fmt.Errorf("%w: %s is in the past", ErrExpires, r.Expires.UTC().Format(time.RFC3339)))
	case r.Expires.Sub(now) > MaxLifetime:
		errs = append(errs, fmt.Errorf("%w: %s is more than %v away", ErrExpires, r.Expires.UTC().Format(time.RFC3339), MaxLifetime))
	}
	if r.Caller == "" && r.Route == "" && r.Param == "" && r.Shape == "" && r.ReasonCode == "" {
		errs = append(errs, ErrNothing)
	}
	return errors.Join(errs...)
}

func validID(id string) bool {
	if id == "" || len(id) > MaxIDBytes {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func validMethod(m string) bool {
	if len(m) > 16 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; !(c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return m != ""
}

func spaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// checkPattern says what is wrong with a caller or route pattern.
func checkPattern(p string) error {
	switch {
	case len(p) > MaxPatternBytes:
		return fmt.Errorf("%d bytes, at most %d", len(p), MaxPatternBytes)
	case strings.ContainsFunc(p, spaceOrControl):
		return fmt.Errorf("%.80q contains white space or control characters", p)
	case strings.Count(p, "*") > MaxStars:
		return fmt.Errorf("%.80q has more than %d wildcards (*)", p, MaxStars)
	case strings.Trim(p, "*") == "":
		return fmt.Errorf("%q matches anything: leave the field out instead", p)
	}
	return nil
}

// checkShape says what is wrong with a shape pattern: every byte must be a
// class representative (what a shape is made of) or *.
func checkShape(p string) error {
	if len(p) > models.MaxValueBytes {
		return fmt.Errorf("%d bytes, at most %d", len(p), models.MaxValueBytes)
	}
	if strings.Count(p, "*") > MaxStars {
		return fmt.Errorf("%.80q has more than %d wildcards (*)", p, MaxStars)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c != '*' && models.ShapeValue(p[i:i+1]) != p[i:i+1] {
			return fmt.Errorf("%.80q is not a shape: byte %d (%q) is not a class representative (a A 0 ' < ( / . , - = ; ! space, or * for any run)", p, i, c)
		}
	}
	return nil
}

// Match reports whether s matches pattern, where * stands for any run of
// characters (none included).
func Match(pattern, s string) bool {
	// The classic linear backtracking on the last star.
	p, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Policy is what one filter denies: the reasons enforce mode denies on,
// and the exceptions of its workload (its own and the mesh's).
type Policy struct {
	// Workload is the filter's workload.
	Workload string
	// Deny holds the reasons a request may be denied for.
	Deny models.ReasonSet
	// Rules are the exceptions; expired ones are ignored.
	Rules []Rule
}

// Decision is the policy's answer about one flagged request.
type Decision struct {
	// Deny is the reason the request is denied for; ReasonNone lets it
	// through.
	Deny models.ReasonCode
	// WouldDeny is what the reasons alone would deny, before exceptions.
	WouldDeny models.ReasonCode
	// Param and Shape are the parameter whose value drove a value reason,
	// and its value's shape (HaveParam says there is one).
	Param, Shape string
	HaveParam    bool
	// Excepted names the exceptions that set aside a reason of the verdict.
	Excepted []string
	// Explained says that the exceptions alone bring the score to the
	// threshold or below: the request is what they let through, and the
	// next model may learn it.
	Explained bool
}

// Denied reports whether the request is denied.
func (d *Decision) Denied() bool { return d.Deny != models.ReasonNone }

// Decide judges a flagged request: v is w's request-phase verdict of r
// (s the scratch it was scored with), threshold the filter's. A request at
// or below the threshold is let through with an empty Decision.
func (p *Policy) Decide(w *models.Workload, r *models.Request, v *models.Verdict, s *models.Scratch, threshold float64, now time.Time) Decision {
	var d Decision
	if w == nil || !(v.Score > threshold) {
		return d
	}
	aside := p.Deny.Complement()
	d.WouldDeny = denyReason(w, v, &aside, threshold)
	d.Deny = d.WouldDeny
	var present, values models.ReasonSet
	for _, rs := range v.ReasonList() {
		present.Add(rs.Code)
		if models.ValueReasons.Has(rs.Code) {
			values.Add(rs.Code)
		}
	}
	if !values.Empty() {
		if name, value, _, ok := w.ValueEvidence(r, s); ok {
			d.Param, d.Shape, d.HaveParam = string(name), models.ShapeValue(string(value)), true
		}
	}
	if len(p.Rules) == 0 {
		return d
	}
	ev := Evidence{Workload: p.Workload, Caller: r.Source, Method: r.Method, Route: models.Template(r.Path), Param: d.Param, Shape: d.Shape, HaveParam: d.HaveParam}
	var granted models.ReasonSet
	for i := range p.Rules {
		rule := &p.Rules[i]
		if !rule.Applies(&ev, now) {
			continue
		}
		set := rule.Sets()
		hit := false
		for i := range set {
			hit = hit || set[i]&present[i] != 0
		}
		if hit {
			granted.Union(&set)
			d.Excepted = append(d.Excepted, rule.ID)
		}
	}
	if len(d.Excepted) == 0 {
		return d
	}
	d.Explained = !(w.ScoreSetAside(v, &granted) > threshold)
	aside.Union(&granted)
	d.Deny = denyReason(w, v, &aside, threshold)
	return d
}

// Evidence is what an exception is matched against: the request's workload,
// caller, method and route template, and the parameter (and its value's
// shape) behind a value reason, when there is one.
type Evidence struct {
	Workload, Caller, Method, Route string
	Param, Shape                    string
	HaveParam                       bool
}

// Applies reports whether the rule holds at now for a request with this
// evidence: every field it gives matches.
func (r *Rule) Applies(ev *Evidence, now time.Time) bool {
	if !now.Before(r.Expires) || r.Workload != Mesh && r.Workload != ev.Workload {
		return false
	}
	if r.Caller != "" && !Match(r.Caller, ev.Caller) || r.Method != "" && r.Method != ev.Method || r.Route != "" && !Match(r.Route, ev.Route) {
		return false
	}
	if r.Param != "" || r.Shape != "" {
		return ev.HaveParam && (r.Param == "" || r.Param == ev.Param) && (r.Shape == "" || Match(r.Shape, ev.Shape))
	}
	return true
}

// Sets returns the reasons the rule sets aside: the reason it names;
// else, when it names a parameter or a shape, the value and content
// reasons; else (an edge or a route) the structural reasons.
func (r *Rule) Sets() models.ReasonSet {
	if r.ReasonCode != "" {
		var s models.ReasonSet
		if c, ok := models.ParseReason(r.ReasonCode); ok {
			s.Add(c)
		}
		return s
	}
	if r.Param != "" || r.Shape != "" {
		// The content model reads the whole request, and what it finds
		// unusual in one the exception's parameter drove is that
		// parameter's value: set aside with it. The exception applies
		// only when its parameter is the one least like its training
		// (Applies), so a worse value in another parameter still denies.
		s := models.ValueReasons
		s.Union(&models.ContentReasons)
		return s
	}
	return models.StructuralReasons
}

// Covers reports whether the rule lets through, at now, a request with
// this evidence denied for reason (meshward preview: which exceptions
// would have saved a denied request; the filter judges the whole verdict
// again, so a request whose other reasons still reach the threshold stays
// denied).
func (r *Rule) Covers(ev *Evidence, reason models.ReasonCode, now time.Time) bool {
	s := r.Sets()
	return s.Has(reason) && r.Applies(ev, now)
}

// denyReason is the strongest reason of v not set aside, when the score
// without what is set aside is still above the threshold; else ReasonNone.
func denyReason(w *models.Workload, v *models.Verdict, aside *models.ReasonSet, threshold float64) models.ReasonCode {
	score, code := w.Graduate(v, aside)
	if code == models.ReasonNone || !(score > threshold) {
		return models.ReasonNone
	}
	return code
}

// ParseDenyReasons reads a deny_reasons list: reason names, and the groups
// "values", "content", "structure", "size", "default" and "none" (nothing:
// enforce then denies nothing inline).
func ParseDenyReasons(names []string) (models.ReasonSet, error) {
	var s models.ReasonSet
	var errs []error
	for i, n := range names {
		switch n {
		case "default":
			d := models.DefaultDenyReasons()
			s.Union(&d)
		case "values":
			s.Union(&models.ValueReasons)
		case "content":
			s.Union(&models.ContentReasons)
		case "structure":
			s.Union(&models.StructuralReasons)
		case "size":
			s.Union(&models.SizeReasons)
		case "none":
		default:
			c, ok := models.ParseReason(n)
			if !ok {
				errs = append(errs, fmt.Errorf("%w[%d]: %.40q is neither a reason (%s) nor a group (default, values, content, structure, size, none)",
					ErrDenyReasons, i, n, strings.Join(models.ReasonNames(), ", ")))
				continue
			}
			if models.ResponseReasons.Has(c) {
				errs = append(errs, fmt.Errorf("%w[%d]: %s is known only once the response is: it cannot deny a request", ErrDenyReasons, i, n))
				continue
			}
			s.Add(c)
		}
	}
	return s, errors.Join(errs...)
}
