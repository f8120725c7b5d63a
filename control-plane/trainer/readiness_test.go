package trainer

import (
	"context"
	"testing"
	"time"
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
