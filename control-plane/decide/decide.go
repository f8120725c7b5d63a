// Package decide turns an incident into a Decision: the intermediate value
// every policy translator (Istio AuthorizationPolicy, Envoy RBAC, YAML on
// disk) reads. Guard rails live here: only an exact SPIFFE identity is ever
// denied anything, a protected namespace is never fenced nor fenced off,
// the number of concurrent quarantines is capped (overall and per source
// namespace), decisions are rate limited (overall and per source
// namespace) on the control plane's clock, and a decision a limit holds
// back waits, pending, until the limit frees. Every decision starts as a
// dry run unless enforcement is allowed.
package decide

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/lateral"
)

// The values decide hands on (lateral.Decision and what it carries), named
// here where they are made.
type (
	Mode     = lateral.Mode
	Target   = lateral.Target
	Decision = lateral.Decision
)

// The modes: a dry run is evaluated and logged by the mesh but denies
// nothing; enforce denies.
const (
	DryRun  = lateral.DryRun
	Enforce = lateral.Enforce
)

// Rules are the guard rails and lifetimes. Defaults in DefaultRules.
type Rules struct {
	// Protected namespaces are never fenced, whatever their workloads do.
	Protected []string
	// MaxActive caps concurrent quarantines.
	MaxActive int
	// TTL is how long a quarantine lasts unless released earlier.
	TTL time.Duration
	// Enforce lets decisions be promoted to enforcement once they have been
	// dry runs for PromoteAfter; otherwise they stay dry runs.
	Enforce      bool
	PromoteAfter time.Duration
	// RateLimit is how many decisions may stand within RatePeriod; more
	// wait (a storm of incidents is more likely a broken model or a
	// mesh-wide change than as many intrusions).
	RateLimit  int
	RatePeriod time.Duration
	// NamespaceRateLimit is how many of those may come from one source
	// namespace, and MaxActivePerNamespace how many quarantines one source
	// namespace may hold: decoys raised in one namespace cannot use up
	// what another's intruder needs.
	NamespaceRateLimit    int
	MaxActivePerNamespace int
	// MaxPending bounds the decisions waiting for a limit to free. Past
	// it, the oldest pending decision of the source namespace with the
	// most pending is dropped (audited), so one namespace's flood evicts
	// its own.
	MaxPending int
}

// DefaultRules returns the defaults, in one place. The control plane's own
// namespace is added by the caller.
func DefaultRules() Rules {
	return Rules{Protected: []string{"istio-system", "kube-system", "meshward-system"}, MaxActive: 10, TTL: time.Hour,
		RateLimit: 5, RatePeriod: time.Minute, PromoteAfter: time.Minute,
		NamespaceRateLimit: 2, MaxActivePerNamespace: 3, MaxPending: 64}
}

// ErrRules is wrapped by every problem Validate reports.
var ErrRules = errors.New("quarantine rules")

// Validate reports every problem with the rules, naming the flags of
// meshward serve that set them.
func (r Rules) Validate() error {
	var errs []error
	if r.MaxActive < 1 {
		errs = append(errs, fmt.Errorf("%w: -max-quarantines %d must be positive", ErrRules, r.MaxActive))
	}
	if r.RateLimit < 1 || r.RatePeriod <= 0 {
		errs = append(errs, fmt.Errorf("%w: -decision-rate %d per -decision-period %v must be positive", ErrRules, r.RateLimit, r.RatePeriod))
	}
	if r.PromoteAfter < 0 {
		errs = append(errs, fmt.Errorf("%w: -promote-after %v must not be negative", ErrRules, r.PromoteAfter))
	}
	if r.TTL <= 0 {
		errs = append(errs, fmt.Errorf("%w: -quarantine-ttl %v must be positive", ErrRules, r.TTL))
	}
	if r.NamespaceRateLimit < 1 || r.MaxActivePerNamespace < 1 || r.MaxPending < 1 {
		errs = append(errs, fmt.Errorf("%w: -decision-rate-per-namespace (%d), -max-quarantines-per-namespace (%d) and -max-pending-decisions (%d) must be positive",
			ErrRules, r.NamespaceRateLimit, r.MaxActivePerNamespace, r.MaxPending))
	}
	return errors.Join(errs...)
}

// Decide turns an incident into a decision, given how many quarantines are
// active now and the time on the control plane's clock. Every decision
// starts as a dry run; Promotion says when it may be enforced. A principal
// that is not an exact SPIFFE identity is never denied anything, and no
// destination in a protected namespace is ever denied to anyone.
func Decide(inc *lateral.Incident, r Rules, active int, now time.Time) Decision {
	d := Decision{ID: inc.ID, Principal: inc.Principal, Mode: DryRun, Created: now, Expires: now.Add(r.TTL),
		Reason: strings.Join(inc.Signals, ", ")}
	perr := ValidPrincipal(inc.Principal)
	if perr == nil {
		d.TrustDomain, d.Namespace, d.ServiceAccount = ParseSPIFFE(inc.Principal)
	}
	seen := map[string]bool{}
	for _, e := range inc.NewEdges {
		if seen[e.Destination] {
			continue
		}
		seen[e.Destination] = true
		name, ns := SplitWorkload(e.Destination)
		t := Target{Workload: e.Destination, Name: name, Namespace: ns}
		switch err := ValidTarget(t); {
		case err != nil:
			d.Skipped = append(d.Skipped, e.Destination+": "+err.Error())
		case contains(r.Protected, ns):
			d.Skipped = append(d.Skipped, e.Destination+": namespace "+ns+" is protected")
		default:
			d.Deny = append(d.Deny, t)
		}
	}
	sort.Slice(d.Deny, func(i, j int) bool { return d.Deny[i].Workload < d.Deny[j].Workload })
	sort.Strings(d.Skipped)
	switch {
	case perr != nil:
		d.Suppressed = perr.Error()
	case contains(r.Protected, d.Namespace):
		d.Suppressed = "the source's namespace " + d.Namespace + " is protected"
	case active >= r.MaxActive:
		d.Suppressed = fmt.Sprintf("%d quarantines are active, the cap is %d", active, r.MaxActive)
		d.Held = true
	case len(d.Deny) == 0:
		d.Suppressed = "no destination to deny"
	}
	return d
}

// Promotion returns when a dry-run decision may be enforced under the
// rules, and false when it may not be (enforcement is not allowed, or the
// decision is enforced or suppressed already).
func Promotion(d Decision, r Rules) (time.Time, bool) {
	if !r.Enforce || d.Mode != DryRun || d.Suppressed != "" {
		return time.Time{}, false
	}
	return d.Created.Add(r.PromoteAfter), true
}

// Guard decides over time: on top of Decide's rails it holds the rate
// limits and the per-namespace cap, remembering (on the control plane's
// clock) when decisions stood, and keeps the decisions a limit held back
// until Reconsider finds room for them. It is not safe for concurrent use.
type Guard struct {
	Rules   Rules
	stood   []stood
	pending map[string]*pending // by principal
	dropped int64
	gone    []string // principals dropped since TakeDropped
}

type stood struct {
	at        time.Time
	namespace string
}

type pending struct {
	inc  *lateral.Incident
	held time.Time // first held back
}

// NewGuard returns a guard for valid rules.
func NewGuard(r Rules) (*Guard, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &Guard{Rules: r, pending: map[string]*pending{}}, nil
}

// Decide is Decide, then the rate limits and the per-namespace cap, given
// the decisions standing now. A decision about a principal already
// standing is a merge, not a new quarantine: no limit holds it. One that a
// limit holds is kept pending (Held) for Reconsider.
func (g *Guard) Decide(inc *lateral.Incident, standing []Decision, now time.Time) Decision {
	for _, s := range standing {
		if s.Principal == inc.Principal {
			return Decide(inc, g.Rules, 0, now)
		}
	}
	d := Decide(inc, g.Rules, len(standing), now)
	if d.Suppressed == "" {
		d.Suppressed = g.limit(d.Namespace, standing, now)
		d.Held = d.Suppressed != ""
	}
	if d.Held {
		g.hold(inc, now)
		d.Suppressed += "; pending until the limit frees"
		return d
	}
	if d.Suppressed == "" {
		delete(g.pending, inc.Principal)
		g.stood = append(g.stood, stood{at: now, namespace: d.Namespace})
	}
	return d
}

// limit says which limit holds a new decision from a namespace back, if any.
func (g *Guard) limit(ns string, standing []Decision, now time.Time) string {
	keep := g.stood[:0]
	for _, s := range g.stood {
		// Within the period; a time more than a period ahead (a clock
		// set back) no longer counts either.
		if now.Sub(s.at) < g.Rules.RatePeriod && s.at.Sub(now) < g.Rules.RatePeriod {
			keep = append(keep, s)
		}
	}
	g.stood = keep
	inNS := 0
	for _, s := range g.stood {
		if s.namespace == ns {
			inNS++
		}
	}
	activeNS := 0
	for _, s := range standing {
		if s.Namespace == ns {
			activeNS++
		}
	}
	switch {
	case len(standing) >= g.Rules.MaxActive:
		return fmt.Sprintf("%d quarantines are active, the cap is %d", len(standing), g.Rules.MaxActive)
	case activeNS >= g.Rules.MaxActivePerNamespace:
		return fmt.Sprintf("%d quarantines of namespace %s are active, the cap per namespace is %d", activeNS, ns, g.Rules.MaxActivePerNamespace)
	case len(g.stood) >= g.Rules.RateLimit:
		return fmt.Sprintf("rate limit: %d decisions within %v already", len(g.stood), g.Rules.RatePeriod)
	case inNS >= g.Rules.NamespaceRateLimit:
		return fmt.Sprintf("rate limit: %d decisions about namespace %s within %v already", inNS, ns, g.Rules.RatePeriod)
	}
	return ""
}

// hold keeps an incident pending; past MaxPending, the oldest pending
// incident of the namespace with the most pending is dropped.
func (g *Guard) hold(inc *lateral.Incident, now time.Time) {
	if p := g.pending[inc.Principal]; p != nil {
		p.inc = inc
		return
	}
	g.pending[inc.Principal] = &pending{inc: inc, held: now}
	for len(g.pending) > g.Rules.MaxPending {
		count := map[string]int{}
		for p := range g.pending {
			_, ns, _ := ParseSPIFFE(p)
			count[ns]++
		}
		var victim string
		var vp *pending
		for p, e := range g.pending {
			_, ns, _ := ParseSPIFFE(p)
			_, vns, _ := ParseSPIFFE(victim)
			switch {
			case vp == nil, count[ns] > count[vns],
				count[ns] == count[vns] && (e.held.Before(vp.held) || e.held.Equal(vp.held) && p < victim):
				victim, vp = p, e
			}
		}
		delete(g.pending, victim)
		g.dropped++
		g.gone = append(g.gone, victim)
	}
}

// TakeDropped returns the principals whose pending decisions MaxPending
// dropped since it was last called (the detector may forget them, so
// that what they do next opens a new incident).
func (g *Guard) TakeDropped() []string {
	out := g.gone
	g.gone = nil
	return out
}

// Pending returns the incidents waiting for a limit to free, oldest first.
func (g *Guard) Pending() []*lateral.Incident {
	ps := g.sortedPending(nil)
	out := make([]*lateral.Incident, len(ps))
	for i, p := range ps {
		out[i] = p.inc
	}
	return out
}

// Dropped is how many pending decisions MaxPending dropped.
func (g *Guard) Dropped() int64 { return g.dropped }

// sortedPending orders the pending incidents for reconsideration: source
// namespaces holding the fewest standing quarantines first (decoys that
// got theirs wait behind an intruder that has none), then the widest
// fan-out, then the oldest.
func (g *Guard) sortedPending(standing []Decision) []*pending {
	active := map[string]int{}
	for _, s := range standing {
		active[s.Namespace]++
	}
	out := make([]*pending, 0, len(g.pending))
	for _, p := range g.pending {
		out = append(out, p)
	}
	ns := func(p *pending) string { _, n, _ := ParseSPIFFE(p.inc.Principal); return n }
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if x, y := active[ns(a)], active[ns(b)]; x != y {
			return x < y
		}
		if x, y := len(a.inc.NewEdges), len(b.inc.NewEdges); x != y {
			return x > y
		}
		if !a.held.Equal(b.held) {
			return a.held.Before(b.held)
		}
		return a.inc.Principal < b.inc.Principal
	})
	return out
}

// Reconsider returns the pending decisions that may stand now, in the
// order they were let through (each counted against the limits as it is);
// the others keep waiting. The caller applies what it gets.
func (g *Guard) Reconsider(standing []Decision, now time.Time) []Decision {
	var out []Decision
	standing = append([]Decision(nil), standing...)
	for _, p := range g.sortedPending(standing) {
		d := Decide(p.inc, g.Rules, len(standing), now)
		if d.Suppressed != "" && !d.Held {
			delete(g.pending, p.inc.Principal) // a rail that no time will lift
			continue
		}
		if d.Held || g.limit(d.Namespace, standing, now) != "" {
			continue
		}
		delete(g.pending, p.inc.Principal)
		g.stood = append(g.stood, stood{at: now, namespace: d.Namespace})
		standing = append(standing, d)
		out = append(out, d)
	}
	return out
}

// Merge folds a new decision about a principal into the standing one: the
// standing id, creation and reason, the later expiry, every target, and
// enforcement if either is enforced.
func Merge(have, d Decision) Decision {
	out := have
	out.Deny = append([]Target(nil), have.Deny...)
	seen := map[string]bool{}
	for _, t := range have.Deny {
		seen[t.Workload] = true
	}
	for _, t := range d.Deny {
		if !seen[t.Workload] {
			seen[t.Workload] = true
			out.Deny = append(out.Deny, t)
		}
	}
	sort.Slice(out.Deny, func(i, j int) bool { return out.Deny[i].Workload < out.Deny[j].Workload })
	if d.Expires.After(out.Expires) {
		out.Expires = d.Expires
	}
	if d.Mode == Enforce {
		out.Mode = Enforce
	}
	return out
}

// ErrPrincipal is returned for a principal that is not an exact SPIFFE
// identity of a Kubernetes service account.
var ErrPrincipal = errors.New("not an exact SPIFFE identity spiffe://<trust domain>/ns/<namespace>/sa/<service account>")

// ErrTarget is returned for a destination that is not a workload name.
var ErrTarget = errors.New("not a workload name.namespace")

// ValidPrincipal checks that p is exactly spiffe://<td>/ns/<ns>/sa/<sa>:
// a trust domain of lower-case letters, digits, '.', '-' and '_'; a
// namespace that is a DNS label; a service account that is a DNS
// subdomain. Nothing else passes — no wildcard ('*' is a prefix or suffix
// match to Istio), no percent-encoding, no empty, '.' or '..' segment, no
// extra segment, query or fragment — so a policy built from it denies one
// identity and no other.
func ValidPrincipal(p string) error {
	rest, ok := strings.CutPrefix(p, "spiffe://")
	if !ok {
		return fmt.Errorf("principal %q: %w", clip(p), ErrPrincipal)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" {
		return fmt.Errorf("principal %q: %w", clip(p), ErrPrincipal)
	}
	var errs []string
	if td := parts[0]; td == "" || len(td) > 255 || strings.Trim(td, "abcdefghijklmnopqrstuvwxyz0123456789.-_") != "" || strings.Trim(td, ".") == "" {
		errs = append(errs, "trust domain")
	}
	if !dnsLabel(parts[2]) {
		errs = append(errs, "namespace")
	}
	if !dnsSubdomain(parts[4]) {
		errs = append(errs, "service account")
	}
	if len(errs) > 0 {
		return fmt.Errorf("principal %q: bad %s: %w", clip(p), strings.Join(errs, ", "), ErrPrincipal)
	}
	return nil
}

// ParseSPIFFE splits spiffe://<td>/ns/<ns>/sa/<sa>; all empty unless the
// principal passes ValidPrincipal.
func ParseSPIFFE(p string) (trustDomain, namespace, serviceAccount string) {
	if ValidPrincipal(p) != nil {
		return "", "", ""
	}
	parts := strings.Split(strings.TrimPrefix(p, "spiffe://"), "/")
	return parts[0], parts[2], parts[4]
}

// ValidTarget checks that a target names one workload: a name usable as an
// app label value and a namespace that is a DNS label, consistent with
// Workload.
func ValidTarget(t Target) error {
	name, ns := SplitWorkload(t.Workload)
	if name != t.Name || ns != t.Namespace || !dnsLabel(t.Namespace) || !labelValue(t.Name) {
		return fmt.Errorf("%q: %w", clip(t.Workload), ErrTarget)
	}
	return nil
}

// dnsLabel is an RFC 1123 label, as Kubernetes namespaces are.
func dnsLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// dnsSubdomain is an RFC 1123 subdomain, as service account names are.
func dnsSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !dnsLabel(l) {
			return false
		}
	}
	return true
}

// labelValue is a Kubernetes label value (the app label selecting the
// target), non-empty.
func labelValue(s string) bool {
	if s == "" || len(s) > 63 || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(alnum(c) || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

// clip shortens what is quoted in an error.
func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// SplitWorkload splits "name.namespace" (meshward's workload naming); a name
// without a namespace is in "default".
func SplitWorkload(w string) (name, namespace string) {
	if i := strings.IndexByte(w, '.'); i > 0 {
		return w[:i], w[i+1:]
	}
	return w, "default"
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
