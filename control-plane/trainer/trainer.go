// Package trainer retrains the model from the samples the collector stored,
// gates the result, and publishes it as the version in force. The gate is
// what keeps a bad model from rolling out: it must fit the size budget, flag
// no more than a bounded share of recent normal traffic it did not learn
// from, and do no worse on that traffic than the model in force.
package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/models"
)

// Config is everything training takes. Defaults in DefaultConfig.
type Config struct {
	// SamplesPerDestination bounds what one destination contributes.
	SamplesPerDestination int64
	// RecentShare is the newest share of each destination's samples kept
	// out of training to judge the candidate on.
	RecentShare float64
	// MaxFlaggedRate is the most of that recent normal traffic a candidate
	// may flag.
	MaxFlaggedRate float64
	// MaxModelBytes is the size budget (a model must fit a Kubernetes object).
	MaxModelBytes int
	// MinSamples is the least number of training samples overall.
	MinSamples int
	// Canary makes a candidate that passes the gate a canary (served to a
	// share of the nodes and watched, see package rollout) when a model is
	// already in force, instead of the version in force at once.
	Canary bool
	Train  models.TrainConfig
}

// DefaultConfig returns the defaults, in one place.
func DefaultConfig() Config {
	tc := models.DefaultTrainConfig()
	// The filter ships value shapes, not values.
	tc.ShapedValues = true
	return Config{SamplesPerDestination: 20_000, RecentShare: 0.1, MaxFlaggedRate: 0.01, MaxModelBytes: 256 << 10, MinSamples: 200, Train: tc}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.SamplesPerDestination < 10 || c.MinSamples < 1 || c.MaxModelBytes < 1024 {
		errs = append(errs, errors.New("samples_per_destination (≥ 10), min_samples and max_model_bytes (≥ 1 KiB) must be positive"))
	}
	if !(c.RecentShare > 0 && c.RecentShare < 0.5) || !(c.MaxFlaggedRate > 0 && c.MaxFlaggedRate < 1) {
		errs = append(errs, fmt.Errorf("recent_share %v must be in (0,0.5) and max_flagged_rate %v in (0,1)", c.RecentShare, c.MaxFlaggedRate))
	}
	return errors.Join(errs...)
}

// Report says what one training round did.
type Report struct {
	Destinations int     `json:"destinations"`
	Learned      uint64  `json:"learned"`
	Recent       int     `json:"recent"`
	FlaggedRate  float64 `json:"flagged_rate"`
	// CurrentFlaggedRate is the model in force's rate on the same recent
	// traffic (-1 when there is none).
	CurrentFlaggedRate float64 `json:"current_flagged_rate"`
	Bytes              int     `json:"bytes"`
	SHA256             string  `json:"sha256,omitempty"`
	// Published is true when the candidate passed the gate and is now the
	// version in force, or the canary when Canary is true; Rejected says
	// why not.
	Published bool   `json:"published"`
	Canary    bool   `json:"canary,omitempty"`
	Rejected  string `json:"rejected,omitempty"`
	// CurrentUnreadable says why the model in force could not be read (one
	// of an older codec version, after an upgrade): the candidate is then
	// trained and gated without it, as for a first model, and the filters
	// keep the one they have until it is published.
	CurrentUnreadable string `json:"current_unreadable,omitempty"`
}

// ErrNoData is returned when there is too little to train on.
var ErrNoData = errors.New("too few samples to train on")

// Round trains a candidate from the store's samples, gates it and, when it
// passes, stores it and makes it the version in force.
func Round(ctx context.Context, st *store.Store, cfg Config, now time.Time) (Report, error) {
	var rep Report
	if err := cfg.Validate(); err != nil {
		return rep, err
	}
	if can, err := st.Canary(ctx); err != nil {
		return rep, err
	} else if can != nil {
		// One candidate at a time: the canary's verdicts decide first.
		rep.Rejected = fmt.Sprintf("canary %.12s is still under watch", can.SHA256)
		return rep, nil
	}
	current, err := currentModel(ctx, st)
	if errors.Is(err, models.ErrModelFormat) {
		rep.CurrentUnreadable, current, err = err.Error(), nil, nil
	}
	if err != nil {
		return rep, err
	}
	dsts, err := st.Destinations(ctx)
	if err != nil {
		return rep, err
	}
	tc := cfg.Train
	tc.Current, tc.Now = current, now
	tr, err := models.NewTrainer(tc)
	if err != nil {
		return rep, err
	}
	var recent []models.Request
	for _, d := range dsts {
		samples, err := st.Samples(ctx, d, cfg.SamplesPerDestination)
		if err != nil {
			return rep, err
		}
		if len(samples) == 0 {
			continue
		}
		rep.Destinations++
		cut := len(samples) - int(float64(len(samples))*cfg.RecentShare)
		for i := range samples[:cut] {
			tr.Observe(&samples[i])
		}
		recent = append(recent, samples[cut:]...)
	}
	learned, _, _, _ := tr.Samples()
	rep.Learned, rep.Recent = learned, len(recent)
	if int(learned) < cfg.MinSamples {
		return rep, fmt.Errorf("%w: %d learned, %d needed", ErrNoData, learned, cfg.MinSamples)
	}
	m, err := tr.Model()
	if err != nil {
		return rep, err
	}
	enc, err := models.Encode(m)
	if err != nil {
		return rep, err
	}
	rep.Bytes, rep.SHA256 = len(enc), m.SHA256()
	rep.FlaggedRate = flaggedRate(m, recent)
	rep.CurrentFlaggedRate = -1
	if current != nil {
		rep.CurrentFlaggedRate = flaggedRate(current, recent)
	}
	switch {
	case len(enc) > cfg.MaxModelBytes:
		rep.Rejected = fmt.Sprintf("%d bytes, budget %d", len(enc), cfg.MaxModelBytes)
	case rep.FlaggedRate > cfg.MaxFlaggedRate:
		rep.Rejected = fmt.Sprintf("flags %.3f%% of recent normal traffic, limit %.3f%%", 100*rep.FlaggedRate, 100*cfg.MaxFlaggedRate)
	case current != nil && rep.FlaggedRate > rep.CurrentFlaggedRate+math.Max(rep.CurrentFlaggedRate/2, 2*cfg.Train.TargetFPR):
		// No worse than the model in force, give or take sampling noise.
		rep.Rejected = fmt.Sprintf("flags %.3f%% of recent traffic where the model in force flags %.3f%%", 100*rep.FlaggedRate, 100*rep.CurrentFlaggedRate)
	}
	if rep.Rejected != "" {
		return rep, nil
	}
	sha, err := st.PutModel(ctx, enc)
	if err != nil {
		return rep, err
	}
	if cfg.Canary && current != nil && current.SHA256() != sha {
		if err := st.StartCanary(ctx, sha, now); err != nil {
			return rep, err
		}
		rep.Published, rep.Canary = true, true
		return rep, nil
	}
	if err := st.SetCurrent(ctx, sha); err != nil {
		return rep, err
	}
	rep.Published = true
	return rep, nil
}

// Rollback makes the version before the one in force current again.
func Rollback(ctx context.Context, st *store.Store) (string, error) {
	cur, err := st.Current(ctx)
	if err != nil {
		return "", err
	}
	hist, err := st.Models(ctx)
	if err != nil {
		return "", err
	}
	for i, sha := range hist {
		if sha == cur && i+1 < len(hist) {
			return hist[i+1], st.SetCurrent(ctx, hist[i+1])
		}
	}
	return "", errors.New("no earlier version to roll back to")
}

func currentModel(ctx context.Context, st *store.Store) (*models.Model, error) {
	sha, err := st.Current(ctx)
	if err != nil || sha == "" {
		return nil, err
	}
	b, err := st.Model(ctx, sha)
	if err != nil {
		return nil, err
	}
	return models.Decode(b)
}

func flaggedRate(m *models.Model, recent []models.Request) float64 {
	if len(recent) == 0 {
		return 0
	}
	s := new(models.Scratch)
	n := 0
	for i := range recent {
		w := m.Workload(recent[i].Destination)
		if w == nil {
			continue
		}
		if v := w.ScoreWith(&recent[i], s); v.Score > m.Meta.Threshold {
			n++
		}
	}
	return float64(n) / float64(len(recent))
}
