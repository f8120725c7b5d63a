package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshward/meshward/control-plane/exception"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/models"
)

// Readiness says, per workload section, whether what the trainer learned
// is enough to judge the workload's traffic: how much it learned, how much
// of the workload's stored traffic (a day at most: the store's retention)
// the section had seen before, and how often it would flag or deny normal
// traffic it did not learn from. The verdict gates -filter-learn-first:
// a workload runs in learn mode until ready for monitor, and in monitor
// mode until ready for enforce.

// The readiness verdicts, from least to most ready.
const (
	Learning         = "learning"
	ReadyForMonitor  = "ready for monitor"
	ReadyForEnforce  = "ready for enforce"
	verdictNoSection = "no section of its own yet: the fallback scores it"
)

// ReadinessConfig is when a workload is ready. Defaults in
// DefaultReadinessConfig.
type ReadinessConfig struct {
	// MinLearned is the least number of requests learned for monitor, and
	// EnforceLearned for enforce.
	MinLearned, EnforceLearned int
	// MinJudged is the least number of held-back requests to estimate
	// rates on, and EnforceJudged for enforce.
	MinJudged, EnforceJudged int
	// MonitorCoverage and EnforceCoverage are the least share of the
	// held-back traffic on edges the section learned.
	MonitorCoverage, EnforceCoverage float64
	// MaxDeniedRate is the most of the held-back normal traffic enforce
	// may deny (graduated, the exceptions applied).
	MaxDeniedRate float64
	// DenyReasons are the filters' deny_reasons (serve's
	// -filter-deny-reasons), which the denied rate is estimated with; nil:
	// the default.
	DenyReasons []string
}

// DefaultReadinessConfig returns the defaults, in one place.
func DefaultReadinessConfig() ReadinessConfig {
	return ReadinessConfig{MinLearned: 200, EnforceLearned: 1000, MinJudged: 20, EnforceJudged: 100,
		MonitorCoverage: 0.9, EnforceCoverage: 0.99, MaxDeniedRate: 0.001}
}

// Validate reports every problem with the configuration.
func (c ReadinessConfig) Validate() error {
	if c.MinLearned < 1 || c.EnforceLearned < c.MinLearned || c.MinJudged < 1 || c.EnforceJudged < c.MinJudged ||
		!(c.MonitorCoverage >= 0 && c.MonitorCoverage <= c.EnforceCoverage && c.EnforceCoverage <= 1) || !(c.MaxDeniedRate >= 0 && c.MaxDeniedRate < 1) {
		return fmt.Errorf("readiness: the enforce bounds must be at least the monitor ones (learned %d/%d, judged %d/%d, coverage %v/%v in [0,1]) and max_denied_rate %v in [0,1)",
			c.MinLearned, c.EnforceLearned, c.MinJudged, c.EnforceJudged, c.MonitorCoverage, c.EnforceCoverage, c.MaxDeniedRate)
	}
	if _, err := c.deny(); err != nil {
		return fmt.Errorf("readiness: %w", err)
	}
	return nil
}

// deny is the reason set enforce denies on.
func (c ReadinessConfig) deny() (models.ReasonSet, error) {
	if c.DenyReasons == nil {
		return models.DefaultDenyReasons(), nil
	}
	return enforcement.ParseDenyReasons(c.DenyReasons)
}

// Readiness is one workload's assessment by a training round.
type Readiness struct {
	Workload string `json:"workload"`
	// Section is the sha256 of the workload's section assessed.
	Section string `json:"section_sha256,omitempty"`
	// Learned is the requests the section learned; Routes and Callers
	// the distinct routes and callers it knows.
	Learned int `json:"requests_learned"`
	Routes  int `json:"routes"`
	Callers int `json:"callers"`
	// Judged is the held-back requests (never learned) the rates and the
	// coverage are measured on.
	Judged int `json:"held_back"`
	// Coverage is the share of those on a caller, route and edge the
	// section learned: how much of the workload's traffic it had seen.
	Coverage float64 `json:"coverage"`
	// FlaggedRate estimates monitor's false-positive rate, DeniedRate
	// enforce's (graduated, exceptions applied), on the held-back share.
	FlaggedRate float64 `json:"est_flagged_rate"`
	DeniedRate  float64 `json:"est_denied_rate"`
	// Verdict is Learning, ReadyForMonitor or ReadyForEnforce; Reason says
	// why (what is missing for the next one).
	Verdict string    `json:"verdict"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// assess measures a workload's candidate section w (nil when it has none
// of its own) on its held-back requests.
func assess(c ReadinessConfig, name string, w *models.Workload, threshold float64, learned int, judge []models.Request, rules []enforcement.Rule, now time.Time) Readiness {
	r := Readiness{Workload: name, Learned: learned, Judged: len(judge), At: now.UTC(), Verdict: Learning}
	if w == nil || w.Name != name {
		r.Reason = verdictNoSection
		return r
	}
	r.Routes, r.Callers = len(w.Routes), len(w.Sources)
	deny, err := c.deny()
	if err != nil {
		deny = models.DefaultDenyReasons() // Validate refused it before a round
	}
	pol := enforcement.Policy{Workload: name, Deny: deny, Rules: rules}
	s := new(models.Scratch)
	known, flagged, denied := 0, 0, 0
	for i := range judge {
		q := judge[i]
		// The request phase decides before a response exists.
		q.Status, q.ResponseBytes = 0, 0
		if w.Knows(&q) {
			known++
		}
		v := w.ScoreWith(&q, s)
		if v.Score > threshold {
			flagged++
			if d := pol.Decide(w, &q, &v, s, threshold, now); d.Denied() {
				denied++
			}
		}
	}
	if n := len(judge); n > 0 {
		r.Coverage, r.FlaggedRate, r.DeniedRate = float64(known)/float64(n), float64(flagged)/float64(n), float64(denied)/float64(n)
	}
	switch {
	case learned < c.MinLearned:
		r.Reason = fmt.Sprintf("%d requests learned, %d needed for monitor", learned, c.MinLearned)
	case r.Judged < c.MinJudged:
		r.Reason = fmt.Sprintf("%d held-back requests to estimate on, %d needed", r.Judged, c.MinJudged)
	case r.Coverage < c.MonitorCoverage:
		r.Reason = fmt.Sprintf("the section had seen %.1f%% of the held-back traffic's edges, %.0f%% needed for monitor", 100*r.Coverage, 100*c.MonitorCoverage)
	default:
		r.Verdict = ReadyForMonitor
		switch {
		case learned < c.EnforceLearned:
			r.Reason = fmt.Sprintf("%d requests learned, %d needed for enforce", learned, c.EnforceLearned)
		case r.Judged < c.EnforceJudged:
			r.Reason = fmt.Sprintf("%d held-back requests, %d needed to estimate enforce's rate", r.Judged, c.EnforceJudged)
		case r.Coverage < c.EnforceCoverage:
			r.Reason = fmt.Sprintf("the section had seen %.1f%% of the held-back traffic's edges, %.0f%% needed for enforce", 100*r.Coverage, 100*c.EnforceCoverage)
		case r.DeniedRate > c.MaxDeniedRate:
			r.Reason = fmt.Sprintf("enforce would deny %.2f%% of held-back normal traffic, at most %.2f%% allowed (see meshward preview; grant exceptions)", 100*r.DeniedRate, 100*c.MaxDeniedRate)
		default:
			r.Verdict = ReadyForEnforce
			r.Reason = fmt.Sprintf("%d requests learned, %.1f%% of the held-back traffic's edges seen, enforce would deny %.2f%% of it", learned, 100*r.Coverage, 100*r.DeniedRate)
		}
	}
	return r
}

// teaches says whether the exceptions in force explain a request the
// section in force flags: one they let through entirely, which the next
// model learns (a release's new edge an operator said is fine).
func teaches(section *models.Model, d string, rules []enforcement.Rule, q *models.Request, s *models.Scratch, now time.Time) bool {
	if section == nil || len(rules) == 0 {
		return false
	}
	w := section.Workload(d)
	if w == nil {
		return false
	}
	r := *models.AsRead(q)
	r.Status, r.ResponseBytes = 0, 0
	v := w.ScoreWith(&r, s)
	if !(v.Score > section.Meta.Threshold) {
		return false
	}
	pol := enforcement.Policy{Workload: d, Rules: rules}
	dec := pol.Decide(w, &r, &v, s, section.Meta.Threshold, now)
	return dec.Explained
}

// rulesFor are the rules of the exceptions in force for a workload.
func rulesFor(es []exception.Exception, d string, now time.Time) []enforcement.Rule {
	return exception.For(es, d, now)
}

// putReadiness stores the round's assessments with the release they are
// of, each naming its workload's section in it.
func putReadiness(ctx context.Context, st *store.Store, rel *store.Release, rs []Readiness) error {
	m := map[string][]byte{}
	for i := range rs {
		rs[i].Section = rel.Sections[rs[i].Workload]
		b, err := json.Marshal(rs[i])
		if err != nil {
			return err
		}
		m[rs[i].Workload] = b
	}
	return st.PutReadiness(ctx, rel.Version, m)
}

// ReadinessOf reads the assessments stored with a release, by workload.
func ReadinessOf(ctx context.Context, st *store.Store, version string) (map[string]Readiness, error) {
	raw, err := st.Readiness(ctx, version)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Readiness, len(raw))
	var errs []error
	for w, b := range raw {
		var r Readiness
		if err := json.Unmarshal(b, &r); err != nil {
			errs = append(errs, fmt.Errorf("stored readiness of %s: %w", w, err))
			continue
		}
		out[w] = r
	}
	return out, errors.Join(errs...)
}
