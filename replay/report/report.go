// Package report turns replayed records and their verdicts into what a user
// reads: a terminal summary, a JSON report with every evaluation figure when
// the traffic is labelled, and one JSON line per request.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/lateral"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/runner"
	"github.com/meshward/meshward/replay/source"
)

// Report is the JSON report of one replay.
type Report struct {
	Runner    string   `json:"runner"`
	Model     string   `json:"model_sha256"`
	Threshold float64  `json:"threshold"`
	Sources   []string `json:"sources"`
	Requests  int      `json:"requests"`
	Scored    int      `json:"scored"`
	Unscored  int      `json:"unscored"`
	Flagged   int      `json:"flagged"`
	// Enforce is present when the runner judged as enforce mode does: what
	// it denied (graduated deny_reasons, exceptions applied).
	Enforce *Enforcement `json:"enforce,omitempty"`
	// Skipped counts malformed entries by reason; Problems lists the first.
	Skipped  map[string]int `json:"skipped"`
	Problems []string       `json:"problems,omitempty"`
	// Labelled counts requests with a label; Evaluation is present when
	// both normal and attack requests are.
	Labelled   int                `json:"labelled"`
	Evaluation *models.Evaluation `json:"evaluation,omitempty"`
	// Top lists the highest-scored requests with their reasons.
	Top []Line `json:"top"`
	// FlaggedBySource counts flagged requests per source principal.
	FlaggedBySource map[string]int `json:"flagged_by_source"`
	// Incidents are the lateral movements the detector caught, with their
	// principals and evidence; Decisions what meshward decided about them
	// (a decision carries its incident's ID; a decision a limit held back
	// may be followed by the one made when the limit freed), and Policies
	// the files written for them.
	Incidents []*lateral.Incident `json:"incidents"`
	Decisions []lateral.Decision  `json:"decisions"`
	Policies  []string            `json:"policies,omitempty"`
	// ControlPlane says how the model came to the filter when the replay
	// ran through the control plane (meshward run): records collected,
	// the training round, the rollout over xDS.
	ControlPlane any `json:"control_plane,omitempty"`
}

// Enforcement is what enforce mode denied in a replay.
type Enforcement struct {
	Denied int `json:"denied"`
	// ByReason counts the denials by the reason denied for; ByDestination
	// by workload.
	ByReason      map[string]int `json:"by_reason"`
	ByDestination map[string]int `json:"by_destination"`
}

// Line is one request's verdict: a line of --scores and an entry of Top.
type Line struct {
	Pos        string   `json:"pos"`
	Src        string   `json:"src"`
	Dst        string   `json:"dst"`
	Method     string   `json:"method"`
	Path       string   `json:"path"`
	Score      float64  `json:"score"`
	Flagged    bool     `json:"flagged"`
	Scored     bool     `json:"scored"`
	Label      string   `json:"label,omitempty"`
	AttackType string   `json:"attack_type,omitempty"`
	Reasons    []string `json:"reasons,omitempty"`
	// Denied is present when the runner judged as enforce mode does: true
	// when the request was answered 403, and DenyReason the reason.
	Denied     *bool  `json:"denied,omitempty"`
	DenyReason string `json:"deny_reason,omitempty"`
}

// maxProblems bounds the problems a report lists (all are counted).
const maxProblems = 50

// New builds the report of a replay. problems are the malformed entries
// skipped while reading; top is how many requests to list.
func New(run string, m *models.Model, threshold float64, sources []string, recs []*source.Record, res []runner.Result, problems []source.Problem, top int) *Report {
	r := &Report{Runner: run, Model: m.SHA256(), Threshold: threshold, Sources: sources, Requests: len(recs),
		Skipped: map[string]int{}, FlaggedBySource: map[string]int{}}
	for _, p := range problems {
		r.Skipped[problemKind(p.Err)]++
		if len(r.Problems) < maxProblems {
			r.Problems = append(r.Problems, p.Error())
		}
	}
	var labelled []models.Labelled
	var normal, attack int
	lines := make([]Line, len(recs))
	for i, rec := range recs {
		v := res[i]
		lines[i] = LineOf(rec, v)
		if v.Scored {
			r.Scored++
		} else {
			r.Unscored++
		}
		if v.Flagged {
			r.Flagged++
			r.FlaggedBySource[rec.Request.Source]++
		}
		if v.Enforcing {
			if r.Enforce == nil {
				r.Enforce = &Enforcement{ByReason: map[string]int{}, ByDestination: map[string]int{}}
			}
			if v.Denied {
				r.Enforce.Denied++
				r.Enforce.ByReason[v.DenyReason]++
				r.Enforce.ByDestination[rec.Request.Destination]++
			}
		}
		if rec.Label != "" {
			r.Labelled++
			labelled = append(labelled, models.Labelled{Score: v.Score, Attack: rec.IsAttack(), Type: rec.AttackType})
			if rec.IsAttack() {
				attack++
			} else {
				normal++
			}
		}
	}
	if normal > 0 && attack > 0 {
		e := models.Evaluate(labelled, threshold)
		r.Evaluation = &e
	}
	sort.SliceStable(lines, func(a, b int) bool { return lines[a].Score > lines[b].Score })
	r.Top = lines[:min(top, len(lines))]
	return r
}

// LineOf describes one record's verdict.
func LineOf(rec *source.Record, v runner.Result) Line {
	path := rec.Request.Path
	if rec.Request.Query != "" {
		path += "?" + rec.Request.Query
	}
	l := Line{Pos: rec.Pos, Src: rec.Request.Source, Dst: rec.Request.Destination, Method: rec.Request.Method, Path: path,
		Score: math.Round(v.Score*1e4) / 1e4, Flagged: v.Flagged, Scored: v.Scored, Label: rec.Label, AttackType: rec.AttackType, Reasons: v.Reasons}
	if v.Enforcing {
		denied := v.Denied
		l.Denied, l.DenyReason = &denied, v.DenyReason
	}
	return l
}

// problemKind reduces an error to a countable reason: its text up to the
// first colon (the field or stage that failed).
func problemKind(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, ':'); i > 0 {
		s = s[:i]
	}
	return s
}

// WriteJSON writes the report, indented.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteScores writes one JSON line per record, in input order.
func WriteScores(w io.Writer, recs []*source.Record, res []runner.Result) error {
	enc := json.NewEncoder(w)
	for i, rec := range recs {
		if err := enc.Encode(LineOf(rec, res[i])); err != nil {
			return err
		}
	}
	return nil
}

// WriteSummary writes the terminal summary.
func (r *Report) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "replayed %d requests through the %s runner (model %.12s, threshold %.3f)\n", r.Requests, r.Runner, r.Model, r.Threshold)
	fmt.Fprintf(w, "  scored %d, unscored %d, flagged %d (%.2f%%)\n", r.Scored, r.Unscored, r.Flagged, 100*float64(r.Flagged)/math.Max(1, float64(r.Requests)))
	if e := r.Enforce; e != nil {
		fmt.Fprintf(w, "  enforce: denied %d (%.2f%%)", e.Denied, 100*float64(e.Denied)/math.Max(1, float64(r.Requests)))
		for _, k := range sortedKeys(e.ByReason) {
			fmt.Fprintf(w, " %s ×%d;", k, e.ByReason[k])
		}
		fmt.Fprintln(w)
	}
	if n := sumValues(r.Skipped); n > 0 {
		fmt.Fprintf(w, "  skipped %d malformed entries:", n)
		for _, k := range sortedKeys(r.Skipped) {
			fmt.Fprintf(w, " %s ×%d;", k, r.Skipped[k])
		}
		fmt.Fprintln(w)
	}
	if e := r.Evaluation; e != nil {
		c := e.AtThreshold
		fmt.Fprintf(w, "  labelled: %d normal, %d attacks — ROC AUC %.4f, PR AUC %.4f, caught at 0.1%% / 1%% FPR: %.1f%% / %.1f%%\n",
			e.Normal, e.Attacks, e.ROCAUC, e.PRAUC, 100*e.TPRAt01, 100*e.TPRAt1)
		fmt.Fprintf(w, "  at the threshold: precision %.4f, recall %.4f, false-positive rate %.3f%% (TP %d, FP %d, TN %d, FN %d)\n",
			c.Precision(), c.Recall(), 100*c.FPR(), c.TP, c.FP, c.TN, c.FN)
		for _, t := range e.PerType {
			fmt.Fprintf(w, "    %-28s caught %d/%d\n", t.Type, t.Caught, t.Total)
		}
	}
	if len(r.Incidents) > 0 {
		fmt.Fprintf(w, "  incidents: %d\n", len(r.Incidents))
		// The last decision about an incident is what stands of it.
		last := map[string]lateral.Decision{}
		for _, d := range r.Decisions {
			last[d.ID] = d
		}
		for _, inc := range r.Incidents {
			var dsts []string
			for _, e := range inc.NewEdges {
				dsts = append(dsts, e.Destination)
			}
			verdict := "no decision"
			if d, ok := last[inc.ID]; ok {
				if d.Suppressed != "" {
					verdict = "not fenced: " + d.Suppressed
				} else {
					verdict = string(d.Mode) + " policy"
				}
			}
			fmt.Fprintf(w, "    %s at %s: %s → new %s [%s] (%s)\n", inc.Principal, inc.Opened.Format(time.RFC3339), strings.Join(inc.Signals, ", "),
				strings.Join(dedupe(dsts), ", "), verdict, inc.ID)
		}
	}
	if len(r.Top) > 0 {
		fmt.Fprintln(w, "  highest scores:")
		for _, l := range r.Top[:min(5, len(r.Top))] {
			fmt.Fprintf(w, "    %.3f %s %s %s → %s [%s] (%s)\n", l.Score, l.Method, l.Path, l.Src, l.Dst, strings.Join(l.Reasons, ","), l.Pos)
		}
	}
}

func dedupe(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sortedKeys(m map[string]int) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
