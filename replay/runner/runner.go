// Package runner scores replayed requests: natively with the models code, or
// through the compiled filter (.wasm) under the proxy-wasm host emulator, so
// a user can check offline what the sidecar would do.
package runner

import (
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

// Result is a runner's verdict on one request.
type Result struct {
	// Score is the anomaly score in [0,1]; Flagged is Score > the threshold.
	Score   float64
	Flagged bool
	// Scored is false when the model had no section for the destination.
	Scored bool
	// Reasons name what drove the score, strongest first.
	Reasons []string
	// Denied says enforce mode answered the request 403 (runners given an
	// Enforce), and DenyReason for which reason (one of deny_reasons).
	Denied     bool
	DenyReason string
	// Enforcing says the runner judged as enforce mode does, so that
	// Denied is an answer (false: let through), not a default.
	Enforcing bool
}

// Runner scores a batch of records, in order.
type Runner interface {
	// Name is "native", "wasm" or "live".
	Name() string
	// Run scores every record and returns one Result per record.
	Run(recs []*source.Record) ([]Result, error)
	// Close releases what the runner holds.
	Close() error
}

// Native scores with the models package in process.
type Native struct {
	Model     *models.Model
	Threshold float64 // 0: the model's own
	// Enforce, when set, decides as enforce mode does (enforce.go).
	Enforce *Enforce
}

// Name implements Runner.
func (*Native) Name() string { return "native" }

// Close implements Runner.
func (*Native) Close() error { return nil }

// Run implements Runner.
func (n *Native) Run(recs []*source.Record) ([]Result, error) {
	th := n.Threshold
	if th == 0 {
		th = n.Model.Meta.Threshold
	}
	out := make([]Result, len(recs))
	s := new(models.Scratch)
	policies, err := n.Enforce.policies()
	if err != nil {
		return nil, err
	}
	for i, r := range recs {
		w := n.Model.Workload(r.Request.Destination)
		if w == nil {
			continue
		}
		if n.Enforce != nil {
			if res, denied := policies.decide(w, &r.Request, s, th); denied {
				out[i] = res
				continue
			}
		}
		v := w.ScoreWith(&r.Request, s)
		res := Result{Score: v.Score, Scored: true, Flagged: v.Score > th, Enforcing: n.Enforce != nil}
		for _, rs := range v.ReasonList() {
			res.Reasons = append(res.Reasons, rs.Code.String())
		}
		out[i] = res
	}
	return out, nil
}
