package runner

import (
	"time"

	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

// Enforce makes a runner act as enforce mode: a request the policy denies
// (graduated deny reasons, the exceptions applied: package enforcement,
// the filter's own code) is answered 403 before it goes upstream, so it
// has no response phase.
type Enforce struct {
	// DenyReasons is the filters' deny_reasons (nil: the default).
	DenyReasons []string
	// Exceptions are in force for every workload they name (and the
	// mesh's for all).
	Exceptions []enforcement.Rule
}

// rulesFor are the exceptions a workload's filter is given.
func (e *Enforce) rulesFor(workload string) []enforcement.Rule {
	var out []enforcement.Rule
	for _, r := range e.Exceptions {
		if r.Workload == enforcement.Mesh || r.Workload == workload {
			out = append(out, r)
		}
	}
	return out
}

// nativePolicies decides natively per workload.
type nativePolicies struct {
	e    *Enforce
	deny models.ReasonSet
	by   map[string]*enforcement.Policy
}

func (e *Enforce) policies() (*nativePolicies, error) {
	if e == nil {
		return nil, nil
	}
	p := &nativePolicies{e: e, deny: models.DefaultDenyReasons(), by: map[string]*enforcement.Policy{}}
	if e.DenyReasons != nil {
		d, err := enforcement.ParseDenyReasons(e.DenyReasons)
		if err != nil {
			return nil, err
		}
		p.deny = d
	}
	return p, nil
}

// decide judges a request's request phase as the filter does, and returns
// the Result of a denial.
func (p *nativePolicies) decide(w *models.Workload, r *models.Request, s *models.Scratch, threshold float64) (Result, bool) {
	req := *r
	req.Status, req.ResponseBytes = 0, 0
	v := w.ScoreWith(&req, s)
	if !(v.Score > threshold) {
		return Result{}, false
	}
	dst := r.Destination
	if dst == "" {
		dst = source.DefaultDestination
	}
	pol := p.by[dst]
	if pol == nil {
		pol = &enforcement.Policy{Workload: dst, Deny: p.deny, Rules: p.e.rulesFor(dst)}
		p.by[dst] = pol
	}
	d := pol.Decide(w, &req, &v, s, threshold, time.Now())
	if !d.Denied() {
		return Result{}, false
	}
	res := Result{Score: v.Score, Scored: true, Flagged: true, Denied: true, DenyReason: d.Deny.String(), Enforcing: true}
	for _, rs := range v.ReasonList() {
		res.Reasons = append(res.Reasons, rs.Code.String())
	}
	return res, true
}
