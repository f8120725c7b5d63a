// Package decide turns an incident into a Decision: the intermediate value
// every policy translator (Istio AuthorizationPolicy, Envoy RBAC, YAML on
// disk) reads. Guard rails live here: a protected namespace is never
// fenced, the number of concurrent quarantines is capped, and every
// decision starts as a dry run unless enforcement is allowed.
package decide

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/control-plane/detect"
)

// Mode is how a decision is applied.
type Mode string

// The modes: a dry run is evaluated and logged by the mesh but denies
// nothing; enforce denies.
const (
	DryRun  Mode = "dry-run"
	Enforce Mode = "enforce"
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
	// RateLimit is how many decisions may stand within RatePeriod; more are
	// suppressed (a storm of incidents is more likely a broken model or a
	// mesh-wide change than as many intrusions).
	RateLimit  int
	RatePeriod time.Duration
}

// DefaultRules returns the defaults, in one place. The control plane's own
// namespace is added by the caller.
func DefaultRules() Rules {
	return Rules{Protected: []string{"istio-system", "kube-system", "meshward-system"}, MaxActive: 10, TTL: time.Hour,
		RateLimit: 5, RatePeriod: time.Minute, PromoteAfter: time.Minute}
}

// Validate reports every problem with the rules.
func (r Rules) Validate() error {
	var errs []error
	if r.MaxActive < 1 {
		errs = append(errs, fmt.Errorf("max_active: %d must be positive", r.MaxActive))
	}
	if r.RateLimit < 1 || r.RatePeriod <= 0 {
		errs = append(errs, fmt.Errorf("rate_limit: %d per %v must be positive", r.RateLimit, r.RatePeriod))
	}
	if r.PromoteAfter < 0 {
		errs = append(errs, fmt.Errorf("promote_after: %v must not be negative", r.PromoteAfter))
	}
	if r.TTL <= 0 {
		errs = append(errs, fmt.Errorf("ttl: %v must be positive", r.TTL))
	}
	return errors.Join(errs...)
}

// Target is a destination workload a principal must no longer reach.
type Target struct {
	Workload  string `json:"workload" yaml:"workload"`
	Name      string `json:"name" yaml:"name"`
	Namespace string `json:"namespace" yaml:"namespace"`
}

// Decision is what meshward decided about one incident.
type Decision struct {
	ID        string `json:"id" yaml:"id"`
	Principal string `json:"principal" yaml:"principal"`
	// Namespace and ServiceAccount come from a SPIFFE principal
	// (spiffe://<td>/ns/<ns>/sa/<sa>); empty for other identities.
	TrustDomain    string    `json:"trust_domain,omitempty" yaml:"trust_domain,omitempty"`
	Namespace      string    `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	ServiceAccount string    `json:"service_account,omitempty" yaml:"service_account,omitempty"`
	Deny           []Target  `json:"deny" yaml:"deny"`
	Mode           Mode      `json:"mode" yaml:"mode"`
	Created        time.Time `json:"created" yaml:"created"`
	Expires        time.Time `json:"expires" yaml:"expires"`
	Reason         string    `json:"reason" yaml:"reason"`
	// Suppressed says why no policy may be written (a guard rail held);
	// empty when the decision stands.
	Suppressed string `json:"suppressed,omitempty" yaml:"suppressed,omitempty"`
}

// Decide turns an incident into a decision, given how many quarantines are
// active now. Every decision starts as a dry run; Promotion says when it
// may be enforced.
func Decide(inc *detect.Incident, r Rules, active int, now time.Time) Decision {
	d := Decision{ID: inc.ID, Principal: inc.Principal, Mode: DryRun, Created: now, Expires: now.Add(r.TTL),
		Reason: strings.Join(inc.Signals, ", ")}
	d.TrustDomain, d.Namespace, d.ServiceAccount = ParseSPIFFE(inc.Principal)
	seen := map[string]bool{}
	for _, e := range inc.NewEdges {
		if seen[e.Destination] {
			continue
		}
		seen[e.Destination] = true
		name, ns := SplitWorkload(e.Destination)
		d.Deny = append(d.Deny, Target{Workload: e.Destination, Name: name, Namespace: ns})
	}
	sort.Slice(d.Deny, func(i, j int) bool { return d.Deny[i].Workload < d.Deny[j].Workload })
	switch {
	case d.Namespace != "" && contains(r.Protected, d.Namespace):
		d.Suppressed = "the source's namespace " + d.Namespace + " is protected"
	case active >= r.MaxActive:
		d.Suppressed = fmt.Sprintf("%d quarantines are active, the cap is %d", active, r.MaxActive)
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
// limit, remembering when decisions stood. It is not safe for concurrent
// use.
type Guard struct {
	Rules Rules
	stood []time.Time
}

// NewGuard returns a guard for valid rules.
func NewGuard(r Rules) (*Guard, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &Guard{Rules: r}, nil
}

// Decide is Decide, then the rate limit.
func (g *Guard) Decide(inc *detect.Incident, active int, now time.Time) Decision {
	d := Decide(inc, g.Rules, active, now)
	if d.Suppressed != "" {
		return d
	}
	keep := g.stood[:0]
	for _, t := range g.stood {
		if now.Sub(t) < g.Rules.RatePeriod {
			keep = append(keep, t)
		}
	}
	g.stood = keep
	if len(g.stood) >= g.Rules.RateLimit {
		d.Suppressed = fmt.Sprintf("rate limit: %d decisions within %v already", len(g.stood), g.Rules.RatePeriod)
		return d
	}
	g.stood = append(g.stood, now)
	return d
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

// ParseSPIFFE splits spiffe://<td>/ns/<ns>/sa/<sa>; all empty otherwise.
func ParseSPIFFE(p string) (trustDomain, namespace, serviceAccount string) {
	rest, ok := strings.CutPrefix(p, "spiffe://")
	if !ok {
		return "", "", ""
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || parts[0] == "" || parts[2] == "" || parts[4] == "" {
		return "", "", ""
	}
	return parts[0], parts[2], parts[4]
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
