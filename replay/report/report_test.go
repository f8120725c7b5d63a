package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/lateral"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/runner"
	"github.com/meshward/meshward/replay/source"
)

func fixture() ([]*source.Record, []runner.Result) {
	var recs []*source.Record
	var res []runner.Result
	for i := 0; i < 100; i++ {
		label, typ, score := source.LabelNormal, "", float64(i%10)/100
		if i%10 == 0 {
			label, typ, score = "attack", "sqli", 0.9+float64(i)/10000
		}
		recs = append(recs, &source.Record{Pos: "f:" + string(rune('0'+i%10)), Label: label, AttackType: typ,
			Request: models.Request{Method: "GET", Path: "/x", Query: "<b>", Source: "a", Destination: "b"}})
		res = append(res, runner.Result{Score: score, Scored: true, Flagged: score > 0.5, Reasons: []string{"keywords"}})
	}
	return recs, res
}

func TestReport(t *testing.T) {
	recs, res := fixture()
	m := &models.Model{Workloads: map[string]*models.Workload{}}
	problems := []source.Problem{{Pos: "f:7", Err: errors.New("method: required")}, {Pos: "f:9", Err: errors.New("method: required")}}
	r := New("native", m, 0.5, []string{"f"}, recs, res, problems, 5)
	if r.Requests != 100 || r.Flagged != 10 || r.Skipped["method"] != 2 || len(r.Top) != 5 || r.Top[0].Score < 0.9 {
		t.Errorf("report %+v", r)
	}
	if e := r.Evaluation; e == nil || e.ROCAUC != 1 || e.AtThreshold.TP != 10 || e.AtThreshold.FP != 0 {
		t.Errorf("evaluation %+v", r.Evaluation)
	}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil || !json.Valid(buf.Bytes()) {
		t.Fatalf("JSON: %v", err)
	}
	buf.Reset()
	if err := WriteScores(&buf, recs, res); err != nil || strings.Count(buf.String(), "\n") != 100 {
		t.Errorf("scores: %v, %d lines", err, strings.Count(buf.String(), "\n"))
	}
	buf.Reset()
	if err := r.WriteHTML(&buf, recs, res); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, want := range []string{"<polyline", "ROC curve", "Score distributions", "sqli", "&lt;b&gt;", "method: required"} {
		if !strings.Contains(page, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Error("the HTML report must be self-contained and script-free")
	}
	buf.Reset()
	r.WriteSummary(&buf)
	if !strings.Contains(buf.String(), "ROC AUC 1.0000") || !strings.Contains(buf.String(), "sqli") {
		t.Errorf("summary:\n%s", buf.String())
	}
}

// The summary gives each incident its last decision, found by its ID: one a
// limit held back and let through later reads as the policy it became.
func TestSummaryGivesEachIncidentItsLastDecision(t *testing.T) {
	recs, res := fixture()
	r := New("native", &models.Model{Workloads: map[string]*models.Workload{}}, 0.5, []string{"f"}, recs, res, nil, 5)
	opened := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	r.Incidents = []*lateral.Incident{
		{ID: "held", Principal: "spiffe://td/ns/a/sa/x", Opened: opened, Signals: []string{"new_destinations=2"}, NewEdges: []lateral.Edge{{Destination: "p.a"}, {Destination: "q.a"}}},
		{ID: "protected", Principal: "spiffe://td/ns/kube-system/sa/y", Opened: opened, Signals: []string{"denied=3"}},
		{ID: "undecided", Principal: "spiffe://td/ns/b/sa/z", Opened: opened},
	}
	r.Decisions = []lateral.Decision{
		{ID: "protected", Suppressed: "the source's namespace kube-system is protected"},
		{ID: "held", Suppressed: "rate limit", Held: true},
		{ID: "held", Mode: lateral.DryRun},
	}
	var buf bytes.Buffer
	r.WriteSummary(&buf)
	for _, want := range []string{
		"spiffe://td/ns/a/sa/x at 2025-03-01T12:00:00Z: new_destinations=2 → new p.a, q.a [dry-run policy] (held)",
		"[not fenced: the source's namespace kube-system is protected] (protected)",
		"[no decision] (undecided)",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, buf.String())
		}
	}
}
