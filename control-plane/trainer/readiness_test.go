package trainer

import (
	"context"
	"testing"
	"time"

	"github.com/meshward/meshward/models"
)

// TestRoundAssessesReadiness: a round stores, with the release it
// publishes, each workload's readiness — what it learned, the coverage and
// the estimated rates on the held-back share, a verdict and its reason —
// and a stricter bar gives a lesser verdict with the reason saying what is
// missing.
func TestRoundAssessesReadiness(t *testing.T) {
	st, _, recs := setup(t)
	ctx := context.Background()
	if err := st.Ingest(ctx, recs); err != nil {
		t.Fatal(err)
	}
	rep, err := Round(ctx, st, DefaultConfig(), time.Unix(0, 0))
	if err != nil || !rep.Published {
		t.Fatalf("round: %+v %v", rep, err)
	}
	if len(rep.Readiness) < rep.Destinations {
		t.Fatalf("%d assessments for %d destinations", len(rep.Readiness), rep.Destinations)
	}
	stored, err := ReadinessOf(ctx, st, rep.SHA256)
	if err != nil || len(stored) != len(rep.Readiness) {
		t.Fatalf("stored %d assessments (%v), want %d", len(stored), err, len(rep.Readiness))
	}
	verdicts := map[string]int{}
	for _, r := range rep.Readiness {
		verdicts[r.Verdict]++
		if r.Reason == "" || r.Verdict == "" {
			t.Errorf("%s: no verdict or reason: %+v", r.Workload, r)
		}
		if r.Verdict != Learning && (r.Learned < DefaultReadinessConfig().MinLearned || r.Coverage < DefaultReadinessConfig().MonitorCoverage) {
			t.Errorf("%s is %s below the bar: %+v", r.Workload, r.Verdict, r)
		}
		if s := stored[r.Workload]; s.Verdict != r.Verdict || s.Section == "" {
			t.Errorf("%s stored as %+v", r.Workload, s)
		}
	}
	t.Logf("verdicts: %v", verdicts)
	if verdicts[ReadyForMonitor]+verdicts[ReadyForEnforce] == 0 {
		t.Errorf("no workload ready for anything: %+v", rep.Readiness)
	}
	// A bar no workload reaches: each is learning, and says why.
	strict := DefaultConfig()
	strict.Readiness.MinLearned, strict.Readiness.EnforceLearned = 1_000_000, 1_000_000
	rep2, err := Round(ctx, st, strict, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep2.Readiness {
		if r.Verdict != Learning || r.Reason == "" {
			t.Errorf("under a bar of a million requests, %s is %q (%s)", r.Workload, r.Verdict, r.Reason)
		}
	}
}

// TestReadinessDeniesAsTheFiltersAreTold: the denied rate is estimated
// with serve's -filter-deny-reasons, not always the default: a release's
// new caller and route are flagged, denied by no default filter, and by
// one told to deny structural novelty too.
func TestReadinessDeniesAsTheFiltersAreTold(t *testing.T) {
	_, g, recs := setup(t)
	cfg := models.DefaultTrainConfig()
	cfg.Now = time.Unix(0, 0)
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		tr.Observe(&recs[i].Request)
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	users := g.Workload("users")
	w := m.Workload(users)
	if w == nil {
		t.Fatalf("no section for %s", users)
	}
	judge := make([]models.Request, 50)
	for i := range judge {
		judge[i] = models.Request{Method: "GET", Path: "/api/v1/sync/42", Source: g.Principal("orders-v2"), Destination: users, Status: 200}
	}
	rate := func(deny []string) Readiness {
		c := DefaultReadinessConfig()
		c.DenyReasons = deny
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		return assess(c, users, w, m.Meta.Threshold, 1000, judge, nil, time.Unix(0, 0))
	}
	def, strict := rate(nil), rate([]string{"default", "structure"})
	if def.FlaggedRate == 0 {
		t.Fatalf("the release is not flagged (%+v): the test shows nothing", def)
	}
	if def.DeniedRate != 0 || strict.DeniedRate == 0 {
		t.Errorf("denied rate %v with the default deny_reasons (want 0), %v with structure too (want > 0)", def.DeniedRate, strict.DeniedRate)
	}
	bad := DefaultReadinessConfig()
	bad.DenyReasons = []string{"no-such-reason"}
	if err := bad.Validate(); err == nil {
		t.Error("an unknown deny reason was accepted")
	}
}
