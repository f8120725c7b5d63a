// Package rollout decides what becomes of a canary model: promoted when its
// flagged rate stays within bounds of the stable model's over the same time,
// on enough requests; rolled back as soon as it leaves them (a
// false-positive spike), or when it has not seen enough traffic to be judged
// in time. A canary is a release; it is judged on the sections it changes:
// its own against the stable sections of the same workloads (all of them
// when every section changed). The evidence is what the filters shipped:
// every record carries the section that scored it (store.Verdicts counts
// them by role). The decision is recorded in the store; xDS follows the
// store (the server syncs it).
package rollout

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meshward/meshward/control-plane/store"
)

// Config is everything the decision takes. Defaults in DefaultConfig.
type Config struct {
	// Canary sends a newly trained model to a share of the nodes first
	// (xds.Config.CanaryShare); false publishes it to all at once.
	Canary bool
	// MinRequests is the least number of requests each of the canary and
	// the stable model must have scored before a decision on the rates.
	MinRequests float64
	// MaxRatio and MaxIncrease bound the canary's flagged rate: it may
	// reach MaxRatio times the stable model's rate or the stable rate plus
	// MaxIncrease, whichever is higher.
	MaxRatio, MaxIncrease float64
	// Observe is how long a canary is watched, at least, before promotion.
	Observe time.Duration
	// Timeout rolls back a canary that has not scored MinRequests by then.
	Timeout time.Duration
	// CheckEvery is how often the leader looks at the canary.
	CheckEvery time.Duration
}

// DefaultConfig returns the defaults, in one place.
func DefaultConfig() Config {
	return Config{Canary: true, MinRequests: 500, MaxRatio: 2, MaxIncrease: 0.005, Observe: 10 * time.Minute, Timeout: time.Hour, CheckEvery: 15 * time.Second}
}

// ErrConfig is wrapped by every problem Validate reports.
var ErrConfig = errors.New("canary rollout")

// Validate reports every problem with the configuration, naming the flags
// of meshward serve that set the values (a field without one by its name).
func (c Config) Validate() error {
	var errs []error
	if !(c.MinRequests >= 1) {
		errs = append(errs, fmt.Errorf("%w: -canary-min-requests %v: at least 1", ErrConfig, c.MinRequests))
	}
	if !(c.MaxRatio >= 1) || !(c.MaxIncrease >= 0 && c.MaxIncrease < 1) {
		errs = append(errs, fmt.Errorf("%w: -canary-max-ratio %v must be ≥ 1 and -canary-max-increase %v in [0,1)", ErrConfig, c.MaxRatio, c.MaxIncrease))
	}
	if c.Observe < 0 || c.Timeout <= c.Observe {
		errs = append(errs, fmt.Errorf("%w: -canary-observe %v must not be negative and -canary-timeout %v must be longer", ErrConfig, c.Observe, c.Timeout))
	}
	if c.CheckEvery <= 0 {
		errs = append(errs, fmt.Errorf("%w: CheckEvery %v must be positive", ErrConfig, c.CheckEvery))
	}
	return errors.Join(errs...)
}

// Bound is the highest flagged rate a canary may show next to a stable rate.
func (c Config) Bound(stable float64) float64 {
	return math.Max(stable*c.MaxRatio, stable+c.MaxIncrease)
}

// Decide judges a canary on its verdicts and the stable model's over the
// same time: the outcome (store.Promoted, store.RolledBack, or "" to keep
// watching) and why.
func Decide(c Config, canary, stable store.Verdicts, watched time.Duration) (outcome, reason string) {
	enough := canary.Requests >= c.MinRequests && stable.Requests >= c.MinRequests
	cr, sr := canary.Rate(), stable.Rate()
	switch {
	case enough && cr > c.Bound(sr):
		return store.RolledBack, fmt.Sprintf("the canary flags %.2f%% of %.0f requests where the stable model flags %.2f%% of %.0f (bound %.2f%%)",
			100*cr, canary.Requests, 100*sr, stable.Requests, 100*c.Bound(sr))
	case enough && watched >= c.Observe:
		return store.Promoted, fmt.Sprintf("the canary flagged %.2f%% of %.0f requests over %v, the stable model %.2f%% of %.0f (bound %.2f%%)",
			100*cr, canary.Requests, watched.Round(time.Second), 100*sr, stable.Requests, 100*c.Bound(sr))
	case watched >= c.Timeout:
		return store.RolledBack, fmt.Sprintf("not enough traffic to judge within %v: the canary scored %.0f requests, the stable model %.0f, %.0f each needed",
			c.Timeout, canary.Requests, stable.Requests, c.MinRequests)
	}
	return "", ""
}

// Step looks at the canary under watch, if any, and records a decision when
// one is due. It returns the decision (nil while watching or without a
// canary).
func Step(ctx context.Context, st *store.Store, c Config, now time.Time) (*store.Decision, error) {
	can, err := st.Canary(ctx)
	if err != nil || can == nil {
		return nil, err
	}
	stable, err := st.Current(ctx)
	if err != nil {
		return nil, err
	}
	counts, err := st.Verdicts(ctx, can.Started, now)
	if err != nil {
		return nil, err
	}
	d := store.Decision{SHA256: can.SHA256, Stable: stable, Canary: counts[can.SHA256+"|"+store.RoleCanary],
		Against: counts[can.SHA256+"|"+store.RoleStable], At: now.UTC()}
	d.Outcome, d.Reason = Decide(c, d.Canary, d.Against, now.Sub(can.Started))
	if d.Outcome == "" {
		return nil, nil
	}
	if err := st.EndCanary(ctx, d); err != nil {
		return nil, err
	}
	return &d, nil
}
