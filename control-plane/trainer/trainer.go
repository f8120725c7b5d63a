// Package trainer retrains the model from the samples the collector stored,
// gates the result, and publishes it as the version in force: a release of
// per-workload sections (store.Release). Workloads are read and trained one
// at a time (models.Trainer.Finish), so a round's memory does not grow with
// the mesh but through the recent traffic the gate judges on. The gate is
// what keeps a bad model from rolling out: every section must fit the size
// budget (a section over it is refused, naming its workload, and that
// workload keeps its section in force; the others are published), and the
// candidate must flag no more than a bounded share of recent normal traffic
// it did not learn from, and do no worse on that traffic than the model in
// force.
//
// A loud minority cannot steer it: what one source contributes to a
// destination is capped where it is read (its oldest and its newest
// samples, a reservoir per source; SamplesPerSource at a destination of
// many sources, an equal part of its budget at one of few), the traffic the gate judges is taken
// across sources and time from those reservoirs (and, with a model in
// force, only what that model does not flag), and destinations no registry
// knows that one source alone calls (junk a workload can invent) get a
// section of their own only as far as MaxJunkSections allows and never
// teach the fallback other workloads are scored against.
package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/control-plane/exception"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/models"
)

// Config is everything training takes. Defaults in DefaultConfig.
type Config struct {
	// SamplesPerDestination bounds what one destination contributes, and
	// SamplesPerSource what one source contributes to one destination
	// (half its oldest samples, half its newest) when the destination has
	// many sources; with fewer than SamplesPerDestination/SamplesPerSource,
	// each may keep an equal part of SamplesPerDestination (perSourceCap).
	// Past that, each source's share shrinks to a fair one (fairShare).
	SamplesPerDestination int64
	SamplesPerSource      int64
	// RecentShare is the share of each source's samples (spread over
	// its reservoir, so over time) kept out of training to judge the
	// candidate on.
	RecentShare float64
	// MaxFlaggedRate is the most of that recent normal traffic a candidate
	// may flag.
	MaxFlaggedRate float64
	// MaxSectionBytes is the size budget of one workload's section: what
	// one sidecar receives (-max-section-bytes).
	MaxSectionBytes int
	// MinSamples is the least number of training samples overall.
	MinSamples int
	// Canary makes a candidate that passes the gate a canary (served to a
	// share of the nodes and watched, see package rollout) when a model is
	// already in force, instead of the version in force at once.
	Canary bool
	// Registered are the workloads the mesh's registry knows (the xDS
	// node groups that connected, say); empty when there is none (or it
	// knows nothing yet), and then no destination is junk. A destination neither registered nor called
	// by two sources is junk:
	// it never teaches the fallback, and at most MaxJunkSections of them
	// (those with the most samples) get a section of their own.
	Registered      map[string]bool
	MaxJunkSections int
	Train           models.TrainConfig
	// Exceptions are those in force: a request the section in force
	// flags that they explain is learned all the same (readiness.go).
	Exceptions []exception.Exception
	// Readiness says when a workload is ready for monitor and enforce.
	Readiness ReadinessConfig
}

// DefaultConfig returns the defaults, in one place.
func DefaultConfig() Config {
	// The filter ships value shapes, not values.
	tc := models.ShapedTrainConfig()
	return Config{SamplesPerDestination: 20_000, SamplesPerSource: 5_000, RecentShare: 0.1, MaxFlaggedRate: 0.01,
		MaxSectionBytes: DefaultMaxSectionBytes, MinSamples: 200, MaxJunkSections: 200, Train: tc, Readiness: DefaultReadinessConfig()}
}

// ErrConfig is wrapped by every problem Validate reports.
var ErrConfig = errors.New("trainer")

// Validate reports every problem with the configuration, naming the flag
// of meshward serve that sets a value, else the field.
func (c Config) Validate() error {
	var errs []error
	if c.SamplesPerDestination < 10 || c.SamplesPerSource < 2 || c.SamplesPerSource > c.SamplesPerDestination {
		errs = append(errs, fmt.Errorf("%w: -samples-per-destination %d (at least 10) and -samples-per-source %d (2 to -samples-per-destination)",
			ErrConfig, c.SamplesPerDestination, c.SamplesPerSource))
	}
	if c.MinSamples < 1 || c.MaxJunkSections < 0 {
		errs = append(errs, fmt.Errorf("%w: MinSamples %d must be positive, MaxJunkSections %d not negative", ErrConfig, c.MinSamples, c.MaxJunkSections))
	}
	if c.MaxSectionBytes < 1024 || c.MaxSectionBytes > models.MaxSectionBytes {
		errs = append(errs, fmt.Errorf("%w: -max-section-bytes %d: want 1 KiB to %d", ErrConfig, c.MaxSectionBytes, models.MaxSectionBytes))
	}
	if !(c.RecentShare > 0 && c.RecentShare < 0.5) || !(c.MaxFlaggedRate > 0 && c.MaxFlaggedRate < 1) {
		errs = append(errs, fmt.Errorf("%w: RecentShare %v must be in (0,0.5) and MaxFlaggedRate %v in (0,1)", ErrConfig, c.RecentShare, c.MaxFlaggedRate))
	}
	errs = append(errs, c.Readiness.Validate())
	return errors.Join(errs...)
}

// DefaultMaxSectionBytes is the default section budget: a sidecar's
// configuration stays within a small Kubernetes object, and a VM's memory
// does not depend on the mesh.
const DefaultMaxSectionBytes = 64 << 10

// Report says what one training round did.
type Report struct {
	Destinations int     `json:"destinations"`
	Learned      uint64  `json:"learned"`
	Recent       int     `json:"recent"`
	FlaggedRate  float64 `json:"flagged_rate"`
	// CurrentFlaggedRate is the model in force's rate on the same recent
	// traffic (-1 when there is none).
	CurrentFlaggedRate float64 `json:"current_flagged_rate"`
	// Sections is the number of sections of the candidate (one per
	// workload, and the fallback); Bytes their total size, Largest the
	// largest one's, and LargestOf whose it is.
	Sections  int    `json:"sections"`
	Bytes     int    `json:"bytes"`
	Largest   int    `json:"largest"`
	LargestOf string `json:"largest_of,omitempty"`
	// Refused lists the sections over the budget, by workload (each keeps
	// its section in force, or gets the fallback when it has none).
	Refused []string `json:"refused,omitempty"`
	// Changed is the number of sections that differ from the release in
	// force (all of them when there is none).
	Changed int    `json:"changed"`
	SHA256  string `json:"sha256,omitempty"`
	// Capped counts the samples read but not used for a source's cap;
	// Junk counts the junk destinations (neither registered nor called by
	// two sources), JunkExamples names a few, and JunkLearned is how many
	// of them got a section of their own.
	Capped       int      `json:"capped,omitempty"`
	Junk         int      `json:"junk,omitempty"`
	JunkExamples []string `json:"junk_examples,omitempty"`
	JunkLearned  int      `json:"junk_learned,omitempty"`
	// Published is true when the candidate passed the gate and is now the
	// version in force, or the canary when Canary is true; Rejected says
	// why not; Unchanged says it is the release in force already.
	Published bool   `json:"published"`
	Canary    bool   `json:"canary,omitempty"`
	Unchanged bool   `json:"unchanged,omitempty"`
	Rejected  string `json:"rejected,omitempty"`
	// CurrentUnreadable says why the model in force could not be read (one
	// of an older codec version, after an upgrade): the candidate is then
	// trained and gated without it, as for a first model, and the filters
	// keep the one they have until it is published.
	CurrentUnreadable string `json:"current_unreadable,omitempty"`
	// Taught counts the requests the section in force flags that the
	// exceptions in force explain, learned all the same.
	Taught int `json:"taught,omitempty"`
	// Readiness assesses each workload's candidate section; it is stored
	// with a release published (or unchanged).
	Readiness []Readiness `json:"readiness,omitempty"`
}

// ErrNoData is returned when there is too little to train on.
var ErrNoData = errors.New("too few samples to train on")

// Round trains a candidate from the store's samples, one destination at a
// time, gates it and, when it passes, stores its sections and makes their
// release the version in force (or the canary).
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
	cur, err := inForce(ctx, st)
	if err != nil {
		return rep, err
	}
	dsts, err := st.Destinations(ctx)
	if err != nil {
		return rep, err
	}
	sort.Strings(dsts)
	tc := cfg.Train
	tc.Current, tc.Now = nil, now
	tr, err := models.NewTrainer(tc)
	if err != nil {
		return rep, err
	}
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
		// Without a registry nothing tells an invented destination from a
		// new workload's: only a registry's absence of d makes it junk.
		if len(cfg.Registered) > 0 && !cfg.Registered[d] && ds.sources < 2 {
			ds.junk = true
			if rep.Junk++; len(rep.JunkExamples) < 10 {
				rep.JunkExamples = append(rep.JunkExamples, d)
			}
		}
		sets = append(sets, ds)
	}
	learnJunk := topJunk(sets, cfg.MaxJunkSections)
	rep.JunkLearned = len(learnJunk)
	recent := map[string][]models.Request{}
	var curFlagged, nRecent int
	learnedBy := map[string]int{}
	scratch := new(models.Scratch)
	for _, ds := range sets {
		if ds.junk && !learnJunk[ds.name] {
			continue
		}
		d := ds.name
		// The section in force for d (its own, or the fallback): requests
		// it flags are not learned, nor judged on.
		section, err := cur.section(ctx, st, d)
		if errors.Is(err, models.ErrModelFormat) {
			// Written by another codec version (after an upgrade): trained
			// and gated as if none were in force; the filters keep theirs
			// until a release replaces it.
			if rep.CurrentUnreadable == "" {
				rep.CurrentUnreadable = err.Error()
			}
			section, err = nil, nil
		}
		if err != nil {
			return rep, err
		}
		if _, ok := cur.own(d); !ok {
			// A workload without a section of its own is new to the model:
			// the fallback flags its traffic for being new (a new caller,
			// a new route), which is what learning it is for. Invented
			// destinations are the junk rules' (registry, MaxJunkSections,
			// never the fallback).
			section = nil
		}
		tr.UseCurrent(section)
		rules := rulesFor(cfg.Exceptions, d, now)
		n := 0
		for i := range ds.learn {
			q := &ds.learn[i]
			if teaches(section, d, rules, q, scratch, now) {
				// What an exception lets through is learned though the
				// section in force flags it.
				tr.UseCurrent(nil)
				if tr.Observe(q) {
					rep.Taught++
					n++
				}
				tr.UseCurrent(section)
				continue
			}
			ok := false
			if ds.junk {
				// Junk teaches its own section, never the fallback.
				ok = tr.ObserveOwn(q)
			} else {
				ok = tr.Observe(q)
			}
			if ok {
				n++
			}
		}
		learnedBy[d] = n
		tr.Finish(d)
		var judge []models.Request
		for i := range ds.judge {
			if section != nil {
				if w := section.Workload(d); w != nil && w.Score(&ds.judge[i]).Score > section.Meta.Threshold {
					continue
				}
			}
			judge = append(judge, ds.judge[i])
		}
		recent[d] = judge
		nRecent += len(judge)
	}
	learned, _, _, _ := tr.Samples()
	rep.Learned, rep.Recent = learned, nRecent
	if int(learned) < cfg.MinSamples {
		return rep, fmt.Errorf("%w: %d learned, %d needed", ErrNoData, learned, cfg.MinSamples)
	}
	secs, err := tr.Sections()
	if err != nil {
		return rep, err
	}
	candFlagged := 0
	for d, rs := range recent {
		w, err := secs.Workload(d)
		if err != nil {
			return rep, err
		}
		candFlagged += flagged(w, secs.Meta.Threshold, rs)
	}
	for _, ds := range sets {
		if _, ok := learnedBy[ds.name]; !ok {
			continue
		}
		w, err := secs.Workload(ds.name)
		if err != nil {
			return rep, err
		}
		rep.Readiness = append(rep.Readiness, assess(cfg.Readiness, ds.name, w, secs.Meta.Threshold, learnedBy[ds.name], ds.judge, rulesFor(cfg.Exceptions, ds.name, now), now))
	}
	rep.FlaggedRate, rep.CurrentFlaggedRate = rate(candFlagged, nRecent), -1
	// A release in force this build cannot read is no measure to gate on.
	compared := cur.release != nil && rep.CurrentUnreadable == ""
	if compared {
		rep.CurrentFlaggedRate = rate(curFlagged, nRecent)
	}
	switch {
	case rep.FlaggedRate > cfg.MaxFlaggedRate:
		rep.Rejected = fmt.Sprintf("flags %.3f%% of recent normal traffic, limit %.3f%%", 100*rep.FlaggedRate, 100*cfg.MaxFlaggedRate)
	case compared && rep.FlaggedRate > rep.CurrentFlaggedRate+math.Max(rep.CurrentFlaggedRate/2, 2*cfg.Train.TargetFPR):
		// No worse than the model in force, give or take sampling noise.
		rep.Rejected = fmt.Sprintf("flags %.3f%% of recent traffic where the model in force flags %.3f%%", 100*rep.FlaggedRate, 100*rep.CurrentFlaggedRate)
	}
	if rep.Rejected != "" {
		return rep, nil
	}

	// Every section within the budget is stored; one over it is refused by
	// name and its workload keeps the section in force.
	w := st.NewRelease(secs.Meta.TrainedAt)
	for _, name := range secs.Names() {
		b, err := secs.Encode(name)
		if err != nil {
			return rep, err
		}
		rep.Sections++
		rep.Bytes += len(b)
		if len(b) > rep.Largest {
			rep.Largest, rep.LargestOf = len(b), name
		}
		if len(b) > cfg.MaxSectionBytes {
			rep.Refused = append(rep.Refused, fmt.Sprintf("%s: %d bytes, over -max-section-bytes %d", name, len(b), cfg.MaxSectionBytes))
			if sha, ok := cur.own(name); ok {
				if err := w.Keep(ctx, name, sha); err != nil {
					return rep, err
				}
			}
			continue
		}
		if _, _, err := w.Put(ctx, b); err != nil {
			return rep, err
		}
	}
	if w.Len() == 0 {
		rep.Rejected = "every section is over -max-section-bytes: " + strings.Join(rep.Refused, "; ")
		return rep, nil
	}
	version, err := w.Commit(ctx)
	if err != nil {
		return rep, err
	}
	rep.SHA256 = version
	next, err := st.Release(ctx, version)
	if err != nil {
		return rep, err
	}
	rep.Changed = cur.changed(next)
	switch {
	case cur.release != nil && cur.release.Version == version:
		rep.Unchanged = true
		return rep, putReadiness(ctx, st, next, rep.Readiness)
	case cfg.Canary && compared:
		if err := st.StartCanary(ctx, version, now); err != nil {
			return rep, err
		}
		rep.Published, rep.Canary = true, true
		return rep, putReadiness(ctx, st, next, rep.Readiness)
	}
	if err := st.SetCurrent(ctx, version); err != nil {
		return rep, err
	}
	rep.Published = true
	return rep, putReadiness(ctx, st, next, rep.Readiness)
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

// current is the release in force, and its sections read so far.
type current struct {
	release  *store.Release
	fallback *models.Model // decoded once: many workloads may have no section
}

func inForce(ctx context.Context, st *store.Store) (*current, error) {
	v, err := st.Current(ctx)
	if err != nil || v == "" {
		return &current{}, err
	}
	r, err := st.Release(ctx, v)
	if err != nil {
		return nil, err
	}
	return &current{release: r}, nil
}

// section is the section in force for workload d, decoded (nil when no
// model is in force).
func (c *current) section(ctx context.Context, st *store.Store, d string) (*models.Model, error) {
	if c.release == nil {
		return nil, nil
	}
	name, sha := c.release.SectionFor(d)
	if sha == "" {
		return nil, nil
	}
	if name == models.GlobalWorkload && c.fallback != nil {
		return c.fallback, nil
	}
	b, err := st.Section(ctx, name, sha)
	if err != nil {
		return nil, err
	}
	m, err := models.DecodeSection(b)
	if err != nil {
		return nil, err
	}
	if name == models.GlobalWorkload {
		c.fallback = m
	}
	return m, nil
}

// own is a workload's own section in force.
func (c *current) own(workload string) (string, bool) {
	if c.release == nil {
		return "", false
	}
	sha, ok := c.release.Sections[workload]
	return sha, ok
}

// changed counts the sections of next that differ from those in force.
func (c *current) changed(next *store.Release) int {
	n := 0
	for w, sha := range next.Sections {
		if old, ok := c.own(w); !ok || old != sha {
			n++
		}
	}
	return n
}

// flagged counts the requests w (the candidate's or the in-force section
// for their destination) scores above threshold.
func flagged(w *models.Workload, threshold float64, recent []models.Request) int {
	if w == nil {
		return 0
	}
	s := new(models.Scratch)
	n := 0
	for i := range recent {
		if v := w.ScoreWith(&recent[i], s); v.Score > threshold {
			n++
		}
	}
	return n
}

func rate(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) / float64(of)
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
// oldest and its newest, at most perSourceCap, shrunk to a fair share of
// SamplesPerDestination when the sources together have more. Every
// 1/RecentShare-th sample of each reservoir is kept to judge the candidate
// on. nil when the destination has none.
func read(ctx context.Context, st *store.Store, dst string, cfg Config) (*destination, error) {
	per := map[string]*reservoir{}
	var order []string
	// How many sources there are is known at the end: each reservoir may
	// hold what a lone source may keep. Together they hold at most the
	// destination's stream (store.Config.MaxSamples).
	half := int(max(cfg.SamplesPerSource, cfg.SamplesPerDestination) / 2)
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
	share := perSourceCap(cfg, len(order))
	share = min(share, fairShare(per, order, int(cfg.SamplesPerDestination), share))
	ds := &destination{name: dst, sources: len(per)}
	every := max(2, int(math.Round(1/cfg.RecentShare)))
	for _, src := range order {
		kept := per[src].samples(share)
		ds.capped += per[src].seen - len(kept)
		for i := range kept {
			if i%every == every-1 {
				// Judged, not learned: as scoring read it.
				ds.judge = append(ds.judge, *models.AsRead(&kept[i]))
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
// half and the newest half of them, more of the oldest when the newest are
// fewer than their half.
func (r *reservoir) samples(n int) []models.Request {
	newest := append(append([]models.Request(nil), r.newest[r.next:]...), r.newest[:r.next]...)
	all := len(r.oldest) + len(newest)
	if all <= n {
		return append(r.oldest, newest...)
	}
	o := min(len(r.oldest), (n+1)/2)
	w := min(len(newest), n-o)
	o = min(len(r.oldest), n-w)
	return append(r.oldest[:o:o], newest[len(newest)-w:]...)
}

// perSourceCap is the most samples one source may keep of a destination
// with that many sources: SamplesPerSource, or an equal part of
// SamplesPerDestination when that is more (fewer than four sources at the
// defaults). A destination all of whose traffic comes from one source (a
// web application behind its ingress gateway) learns from its whole
// budget, not a quarter of it: there is no other source to outweigh. With
// many sources, no one of them keeps more than SamplesPerSource, however
// much it sends.
func perSourceCap(cfg Config, sources int) int {
	return int(max(cfg.SamplesPerSource, cfg.SamplesPerDestination/int64(max(1, sources))))
}

// fairShare is the most samples each source may keep, each at most capped,
// so that together they keep at most total: sources under it keep all
// theirs (water-filling).
func fairShare(per map[string]*reservoir, order []string, total, capped int) int {
	sizes := make([]int, 0, len(order))
	for _, src := range order {
		sizes = append(sizes, min(capped, len(per[src].oldest)+len(per[src].newest)))
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
