// Package preview answers, before a workload is switched to enforce mode,
// what enforce would deny: from the records the filters shipped (each
// flagged request carries the policy's decision, made in the sidecar
// with the graduated deny reasons and the exceptions then in force), per
// workload and reason, with examples, the exceptions in force that would
// let them through, and the exceptions to grant that would (meshward
// preview, GET /api/v1/preview).
package preview

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/control-plane/exception"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// MaxExamples is how many examples each reason lists.
const MaxExamples = 5

// Report is what enforce would deny.
type Report struct {
	Mode string `json:"mode"`
	// Since is the time asked for; From the start of the first hour
	// counted (counts are kept per hour).
	Since time.Time `json:"since"`
	From  time.Time `json:"counted_from"`
	Until time.Time `json:"until"`
	// Denied counts the requests enforce denies (in enforce mode: did;
	// in monitor: would have), Saved those the exceptions in force when
	// they passed let through.
	Denied    int64      `json:"denied"`
	Saved     int64      `json:"saved_by_exceptions"`
	Workloads []Workload `json:"workloads"`
}

// Workload is one workload's part of the report.
type Workload struct {
	Workload string   `json:"workload"`
	Denied   int64    `json:"denied"`
	Saved    int64    `json:"saved_by_exceptions"`
	Reasons  []Reason `json:"reasons"`
	// Kept is how many of its records the store keeps (the newest, about
	// store.MaxDenied): examples and exceptions are judged on them.
	Kept int `json:"records_kept"`
}

// Reason is what one reason denies in one workload.
type Reason struct {
	Reason   string    `json:"reason"`
	Denied   int64     `json:"denied"`
	Saved    int64     `json:"saved_by_exceptions,omitempty"`
	Examples []Example `json:"examples"`
	// Granted are exceptions in force that would let some of the kept
	// denied requests through (granted since they passed); Suggested
	// are exceptions that would, to grant with meshward allow.
	Granted   []Cover `json:"granted,omitempty"`
	Suggested []Cover `json:"suggested,omitempty"`
}

// Example is one request denied.
type Example struct {
	At       time.Time `json:"at"`
	Caller   string    `json:"caller"`
	Method   string    `json:"method"`
	Route    string    `json:"route"`
	Param    string    `json:"param,omitempty"`
	Shape    string    `json:"shape,omitempty"`
	Reasons  []string  `json:"reasons"`
	Score    float64   `json:"score"`
	Enforced bool      `json:"enforced,omitempty"`
}

// Cover is an exception and how many kept denied requests of its reason
// it would let through.
type Cover struct {
	ID      string           `json:"id,omitempty"`
	Rule    enforcement.Rule `json:"rule"`
	Covers  int              `json:"covers"`
	Command string           `json:"command,omitempty"`
}

// Build reads the store's decisions since a time, for one workload or
// (empty) all, and judges them against the exceptions in force at now.
func Build(ctx context.Context, st *store.Store, since, now time.Time, workload string, es []exception.Exception) (*Report, error) {
	dsts, err := st.DenyDestinations(ctx)
	if err != nil {
		return nil, err
	}
	rep := &Report{Mode: "enforce", Since: since.UTC(), Until: now.UTC(), Workloads: []Workload{}}
	active := exception.Active(es, now)
	for _, dst := range dsts {
		if workload != "" && dst != workload {
			continue
		}
		d, err := st.Denials(ctx, dst, since, now)
		if err != nil {
			return nil, err
		}
		rep.From = d.From
		w := workloadOf(d, active, now)
		if w.Denied == 0 && w.Saved == 0 {
			continue
		}
		rep.Denied += w.Denied
		rep.Saved += w.Saved
		rep.Workloads = append(rep.Workloads, w)
	}
	if rep.From.IsZero() {
		rep.From = since.UTC().Truncate(store.DenyHour)
	}
	return rep, nil
}

func workloadOf(d *store.Denials, active []exception.Exception, now time.Time) Workload {
	w := Workload{Workload: d.Destination, Kept: len(d.Records)}
	names := map[string]bool{}
	for r := range d.Counts[store.KindDeny] {
		names[r] = true
	}
	for r := range d.Counts[store.KindSaved] {
		names[r] = true
	}
	byReason := map[string][]*record.Record{}
	for i := range d.Records {
		if r := &d.Records[i]; r.Deny != "" {
			byReason[r.Deny] = append(byReason[r.Deny], r)
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, name := range sorted {
		rs := Reason{Reason: name, Denied: d.Counts[store.KindDeny][name], Saved: d.Counts[store.KindSaved][name], Examples: []Example{}}
		w.Denied += rs.Denied
		w.Saved += rs.Saved
		kept := byReason[name]
		for i := len(kept) - 1; i >= 0 && len(rs.Examples) < MaxExamples; i-- {
			rs.Examples = append(rs.Examples, example(kept[i]))
		}
		code, _ := models.ParseReason(name)
		rs.Granted = granted(kept, code, active, now)
		rs.Suggested = suggest(d.Destination, kept, code, now)
		w.Reasons = append(w.Reasons, rs)
	}
	return w
}

func example(r *record.Record) Example {
	at := r.TS
	if at.IsZero() {
		at = r.Received
	}
	return Example{At: at, Caller: r.Request.Source, Method: r.Request.Method, Route: r.Route, Param: r.DenyParam, Shape: r.DenyShape,
		Reasons: r.Reasons, Score: r.Score, Enforced: r.Enforced}
}

func evidence(dst string, r *record.Record) enforcement.Evidence {
	return enforcement.Evidence{Workload: dst, Caller: r.Request.Source, Method: r.Request.Method, Route: r.Route,
		Param: r.DenyParam, Shape: r.DenyShape, HaveParam: r.DenyParam != ""}
}

// granted counts, per exception in force, the kept denied records it
// would let through.
func granted(kept []*record.Record, code models.ReasonCode, active []exception.Exception, now time.Time) []Cover {
	var out []Cover
	for i := range active {
		e := &active[i]
		n := 0
		for _, r := range kept {
			ev := evidence(r.Request.Destination, r)
			if e.Covers(&ev, code, now) {
				n++
			}
		}
		if n > 0 {
			out = append(out, Cover{ID: e.ID, Rule: e.Rule, Covers: n})
		}
	}
	return out
}

// suggest proposes exceptions that would let the kept denied records of a
// reason through: per route (and parameter, for a value reason) the
// narrowest that covers them — a parameter on its route for a value
// reason, the reason on its route otherwise, an edge for a structural one
// — most covering first, at most three.
func suggest(dst string, kept []*record.Record, code models.ReasonCode, now time.Time) []Cover {
	type key struct{ method, route, param, caller string }
	groups := map[key]int{}
	for _, r := range kept {
		k := key{method: r.Request.Method, route: r.Route}
		switch {
		case models.ValueReasons.Has(code) && r.DenyParam != "":
			k.param = r.DenyParam
		case models.StructuralReasons.Has(code):
			k = key{caller: r.Request.Source}
		}
		groups[k]++
	}
	var out []Cover
	for k, n := range groups {
		rule := enforcement.Rule{Workload: dst, Caller: k.caller, Method: k.method, Route: k.route, Param: k.param, Expires: now.Add(24 * time.Hour).UTC()}
		if k.param == "" && k.caller == "" {
			rule.ReasonCode = code.String()
		}
		out = append(out, Cover{Rule: rule, Covers: n, Command: command(&rule)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Covers != out[j].Covers {
			return out[i].Covers > out[j].Covers
		}
		return out[i].Command < out[j].Command
	})
	if len(out) > 3 {
		out = out[:3]
	}
	return out
}

// command is the meshward allow command line granting a rule for a day.
func command(r *enforcement.Rule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "meshward allow -workload %s", quote(r.Workload))
	for _, f := range []struct{ flag, v string }{{"caller", r.Caller}, {"method", r.Method}, {"route", r.Route}, {"param", r.Param}, {"shape", r.Shape}, {"reason-code", r.ReasonCode}} {
		if f.v != "" {
			fmt.Fprintf(&b, " -%s %s", f.flag, quote(f.v))
		}
	}
	b.WriteString(` -ttl 24h -reason "…"`)
	return b.String()
}

// quote makes a shell word of s.
func quote(s string) string {
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
