package rollout

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/store"
)

func TestDecide(t *testing.T) {
	c := DefaultConfig()
	c.MinRequests, c.Observe, c.Timeout = 1000, 10*time.Minute, time.Hour
	v := func(requests float64, flagged int64) store.Verdicts {
		return store.Verdicts{Requests: requests, Flagged: flagged}
	}
	for _, tc := range []struct {
		name            string
		canary, stable  store.Verdicts
		watched         time.Duration
		outcome, reason string
	}{
		{"too early, too few", v(100, 50), v(5000, 50), time.Minute, "", ""},
		{"a spike rolls back at once", v(2000, 100), v(5000, 50), time.Minute, store.RolledBack, "flags 5.00%"},
		{"within bounds, still watched", v(2000, 25), v(5000, 50), time.Minute, "", ""},
		{"within bounds, watched long enough", v(2000, 25), v(5000, 50), 10 * time.Minute, store.Promoted, "flagged 1.25%"},
		{"twice the stable rate is the bound", v(2000, 40), v(5000, 50), 10 * time.Minute, store.Promoted, "bound 2.00%"},
		{"above twice the rate", v(2000, 42), v(5000, 50), 10 * time.Minute, store.RolledBack, "bound 2.00%"},
		{"a stable rate of zero allows max_increase", v(2000, 9), v(5000, 0), 10 * time.Minute, store.Promoted, "bound 0.50%"},
		{"the stable model saw too little", v(2000, 0), v(10, 0), 30 * time.Minute, "", ""},
		{"no evidence by the timeout", v(20, 0), v(5000, 0), time.Hour, store.RolledBack, "not enough traffic"},
	} {
		out, why := Decide(c, tc.canary, tc.stable, tc.watched)
		if out != tc.outcome || !strings.Contains(why, tc.reason) {
			t.Errorf("%s: %q %q, want %q containing %q", tc.name, out, why, tc.outcome, tc.reason)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := Config{MinRequests: 0, MaxRatio: 0.5, MaxIncrease: 2, Observe: time.Hour, Timeout: time.Minute}
	err := bad.Validate()
	if !errors.Is(err, ErrConfig) {
		t.Errorf("validation %v does not wrap ErrConfig", err)
	}
	// Every problem, each naming the flag that sets it (CheckEvery has none).
	for _, want := range []string{"-canary-min-requests 0", "-canary-max-ratio 0.5", "-canary-max-increase 2", "-canary-timeout 1m0s", "CheckEvery 0s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation %v does not mention %s", err, want)
		}
	}
}
