// Package trainer retrains the model from the samples the collector stored,
// gates the result, and publishes it as the version in force. The gate is
// what keeps a bad model from rolling out: it must fit the size budget, flag
// no more than a bounded share of normal traffic it did not learn from, and
// do no worse on that traffic than the model in force.
//
// A loud minority cannot steer it: what one source contributes to a
// destination is capped where it is read (its oldest and its newest
// samples, a reservoir per source), the traffic the gate judges is taken
// across sources and time from those reservoirs (and, with a model in
// force, only what that model does not flag), and destinations no
// registry knows that one source alone calls (junk a workload can invent)
// are learned only when the model has room for them.
package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/models"
)

// Config is everything training takes. Defaults in DefaultConfig.
type Config struct {
	// SamplesPerDestination bounds what one destination contributes, and
	// SamplesPerSource what one source contributes to one destination
	// (half its oldest samples, half its newest); past the first, each
	// source's share shrinks to a fair one.
	SamplesPerDestination int64
	SamplesPerSource      int64
	// RecentShare is the share of each source's samples (spread over
	// its reservoir, so over time) kept out of training to judge the
	// candidate on.
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
	// Registered are the workloads the mesh's registry knows (the xDS
	// node groups that connected, say); nil when there is none. A
	// destination neither registered nor called by two sources is junk:
	// learned only if the model fits its budget with it.
	Registered map[string]bool
	Train      models.TrainConfig
}

// DefaultConfig returns the defaults, in one place.
func DefaultConfig() Config {
	tc := models.DefaultTrainConfig()
	// The filter ships value shapes, not values.
	tc.ShapedValues = true
	return Config{SamplesPerDestination: 20_000, SamplesPerSource: 5_000, RecentShare: 0.1, MaxFlaggedRate: 0.01, MaxModelBytes: 256 << 10, MinSamples: 200, Train: tc}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.SamplesPerDestination < 10 || c.SamplesPerSource < 2 || c.MinSamples < 1 || c.MaxModelBytes < 1024 {
		errs = append(errs, errors.New("samples_per_destination (≥ 10), samples_per_source (≥ 2), min_samples and max_model_bytes (≥ 1 KiB) must be positive"))
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
	// Capped counts the samples read but not used for a source's cap;
	// Junk counts the junk destinations (neither registered nor called by
	// two sources), JunkExamples names a few, and JunkLearned is how many
	// of them the model had room for.
	Capped       int      `json:"capped,omitempty"`
	Junk         int      `json:"junk,omitempty"`
	JunkExamples []string `json:"junk_examples,omitempty"`
	JunkLearned  int      `json:"junk_learned,omitempty"`
	// Published is true when the candidate passed the gate and is now the
	// version in force, or the canary when Canary is true; Rejected says
	// why not.
	Published bool   `json:"published"`
	Canary    bool   `json:"canary,omitempty"`
	Rejected  string `json:"rejected,omitempty"`
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
	if err != nil {
		return rep, err
	}
	dsts, err := st.Destinations(ctx)
	if err != nil {
		return rep, err
	}
	sort.Strings(dsts) // training does not depend on the order; reports do
	var sets []*destination
	for _, d := range dsts {
		ds, err := read(ctx, st, d, cfg)
		if err != nil {
			return rep, err
		}
		if ds == nil {
			continue
		}
		rep.Destinations++
		rep.Capped += ds.capped
		if !cfg.Registered[d] && ds.sources < 2 {
			ds.junk = true
			if rep.Junk++; len(rep.JunkExamples) < 10 {
				rep.JunkExamples = append(rep.JunkExamples, d)
			}
		}
		sets = append(sets, ds)
	}
	all := func(*destination) bool { return true }
	m, enc, recent, learned, err := candidate(sets, cfg, current, now, all)
	rep.JunkLearned = rep.Junk
	if (err != nil || len(enc) > cfg.MaxModelBytes) && rep.Junk > 0 {
		// Junk does not take the budget from the mesh's destinations
		// (nor the codec's limit): the model is trained without it, then
		// with as much of it as the room left seems to allow, the junk
		// with the most samples first (an honest workload called by one
		// source has traffic; invented ones are cheap only in number).
		full := len(enc)
		m, enc, recent, learned, err = candidate(sets, cfg, current, now, func(ds *destination) bool { return !ds.junk })
		rep.JunkLearned = 0
		if err == nil && len(enc) <= cfg.MaxModelBytes {
			base := len(enc)
			k := junkRoom(rep.Junk, rep.Junk, full, base, cfg.MaxModelBytes)
			// At most three tries, each estimating a junk section's cost
			// from the last.
			for try := 0; try < 3 && k > 0; try++ {
				some := topJunk(sets, k)
				m2, enc2, recent2, learned2, err2 := candidate(sets, cfg, current, now, func(ds *destination) bool { return !ds.junk || some[ds.name] })
				if err2 == nil && len(enc2) <= cfg.MaxModelBytes {
					m, enc, recent, learned, rep.JunkLearned = m2, enc2, recent2, learned2, k
					break
				}
				k = junkRoom(k, rep.Junk, len(enc2), base, cfg.MaxModelBytes)
			}
		}
	}
	if err != nil {
		return rep, err
	}
	rep.Learned, rep.Recent = learned, len(recent)
	if int(learned) < cfg.MinSamples {
		return rep, fmt.Errorf("%w: %d learned, %d needed", ErrNoData, learned, cfg.MinSamples)
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

// destination is what training reads of one destination: each source's
// reservoir, the samples to learn and the ones kept to judge on.
type destination struct {
	name         string
	learn, judge []models.Request
	sources      int
	capped       int
	junk         bool
}

// read takes a destination's samples through a reservoir per source: its
// oldest and its newest, at most SamplesPerSource, shrunk to a fair share
// of SamplesPerDestination when the sources together have more. Every
// 1/RecentShare-th sample of each reservoir is kept to judge the candidate
// on. nil when the destination has none.
func read(ctx context.Context, st *store.Store, dst string, cfg Config) (*destination, error) {
	per := map[string]*reservoir{}
	var order []string
	half := int(cfg.SamplesPerSource / 2)
	err := st.ForEachSample(ctx, dst, func(s store.Sample) {
		r := per[s.Request.Source]
		if r == nil {
			r = &reservoir{max: half}
			per[s.Request.Source] = r
			order = append(order, s.Request.Source)
		}
		r.add(s.Request)
	})
	if err != nil || len(per) == 0 {
		return nil, err
	}
	sort.Strings(order)
	share := fairShare(per, order, int(cfg.SamplesPerDestination))
	ds := &destination{name: dst, sources: len(per)}
	every := max(2, int(math.Round(1/cfg.RecentShare)))
	for _, src := range order {
		kept := per[src].samples(share)
		ds.capped += per[src].seen - len(kept)
		for i := range kept {
			if i%every == every-1 {
				ds.judge = append(ds.judge, kept[i])
			} else {
				ds.learn = append(ds.learn, kept[i])
			}
		}
	}
	return ds, nil
}

// reservoir keeps a source's first max samples and its last max.
type reservoir struct {
	max        int
	oldest     []models.Request
	newest     []models.Request // a ring once full
	next, seen int
}

func (r *reservoir) add(q models.Request) {
	r.seen++
	if len(r.oldest) < r.max {
		r.oldest = append(r.oldest, q)
		return
	}
	if len(r.newest) < r.max {
		r.newest = append(r.newest, q)
		return
	}
	r.newest[r.next] = q
	r.next = (r.next + 1) % r.max
}

// samples returns at most n of the kept samples in time order: the oldest
// half and the newest half of them.
func (r *reservoir) samples(n int) []models.Request {
	newest := append(append([]models.Request(nil), r.newest[r.next:]...), r.newest[:r.next]...)
	all := len(r.oldest) + len(newest)
	if all <= n {
		return append(r.oldest, newest...)
	}
	o := min(len(r.oldest), (n+1)/2)
	w := min(len(newest), n-o)
	return append(r.oldest[:o:o], newest[len(newest)-w:]...)
}

// fairShare is the most samples each source may keep so that together they
// keep at most total: sources under it keep all theirs (water-filling).
func fairShare(per map[string]*reservoir, order []string, total int) int {
	sizes := make([]int, 0, len(order))
	for _, src := range order {
		sizes = append(sizes, len(per[src].oldest)+len(per[src].newest))
	}
	sort.Ints(sizes)
	left := total
	for i, n := range sizes {
		fair := left / (len(sizes) - i)
		if n > fair {
			return max(1, fair)
		}
		left -= n
	}
	return math.MaxInt
}

// junkRoom estimates how many junk destinations (of junk) fit the room a
// model of base bytes leaves in the budget, from what n of them cost on
// top of it (full bytes; 0 when that model did not even encode).
func junkRoom(n, junk, full, base, budget int) int {
	cost := 1024 // a small section, when it could not be measured
	if full > base {
		cost = max(64, (full-base)/n)
	}
	return min(junk, (budget-base)*9/10/cost)
}

// topJunk names the k junk destinations with the most samples.
func topJunk(sets []*destination, k int) map[string]bool {
	var junk []*destination
	for _, ds := range sets {
		if ds.junk {
			junk = append(junk, ds)
		}
	}
	sort.SliceStable(junk, func(i, j int) bool { return len(junk[i].learn) > len(junk[j].learn) })
	out := map[string]bool{}
	for _, ds := range junk[:min(k, len(junk))] {
		out[ds.name] = true
	}
	return out
}

// candidate trains a model on the learning samples of the destinations
// use accepts and returns it encoded, with the samples to judge it on:
// those the model in force, if any, does not flag.
func candidate(sets []*destination, cfg Config, current *models.Model, now time.Time, use func(*destination) bool) (*models.Model, []byte, []models.Request, uint64, error) {
	tc := cfg.Train
	tc.Current, tc.Now = current, now
	tr, err := models.NewTrainer(tc)
	if err != nil {
		return nil, nil, nil, 0, err
	}
	var recent []models.Request
	for _, ds := range sets {
		if !use(ds) {
			continue
		}
		for i := range ds.learn {
			tr.Observe(&ds.learn[i])
		}
		for i := range ds.judge {
			// What the model in force flags is not normal traffic to
			// judge a candidate on (nor learned, see TrainConfig.Current).
			if current != nil {
				if w := current.Workload(ds.judge[i].Destination); w != nil && w.Score(&ds.judge[i]).Score > current.Meta.Threshold {
					continue
				}
			}
			recent = append(recent, ds.judge[i])
		}
	}
	learned, _, _, _ := tr.Samples()
	if learned == 0 {
		return nil, nil, recent, 0, nil
	}
	m, err := tr.Model()
	if err != nil {
		return nil, nil, nil, 0, err
	}
	enc, err := models.Encode(m)
	if err != nil {
		return nil, nil, nil, 0, err
	}
	return m, enc, recent, learned, nil
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
