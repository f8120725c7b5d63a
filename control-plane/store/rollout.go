package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The rollout's state lives in Redis, so that a restarted control plane (or
// another replica) serves what the last one decided: the version in force
// (current), the canary under watch, and the decisions taken. Its keys share
// one hash tag, {rollout}, so a decision changes them in one transaction on
// a cluster too.

func (s *Store) rolloutKey(name string) string { return s.cfg.Prefix + ":{rollout}:" + name }

// Verdicts are the requests one model version scored, and how many it
// flagged, as the filters reported them.
type Verdicts struct {
	// Requests is estimated: an unflagged record stands for the share the
	// filter did not ship.
	Requests float64 `json:"requests"`
	Flagged  int64   `json:"flagged"`
}

// Rate is the flagged share (0 without requests).
func (v Verdicts) Rate() float64 {
	if v.Requests <= 0 {
		return 0
	}
	return float64(v.Flagged) / v.Requests
}

func (s *Store) verdictKey(window string) string { return s.cfg.Prefix + ":{verdicts}:" + window }

// VerdictsAll keys, in Verdicts, the requests every section scored.
const VerdictsAll = "all"

// The roles of a section a canary watches.
const (
	RoleCanary = "canary"
	RoleStable = "stable"
)

// Verdicts sums the verdicts reported in the windows from since to until:
// under VerdictsAll every section's, and under "<canary version>|canary"
// and "<canary version>|stable" those of the sections a canary watched
// (its changed sections, and the stable sections of the same workloads).
func (s *Store) Verdicts(ctx context.Context, since, until time.Time) (map[string]Verdicts, error) {
	pipe := s.rdb.Pipeline()
	var cmds []*redis.MapStringStringCmd
	for w := s.window(since); w <= s.window(until); w++ {
		cmds = append(cmds, pipe.HGetAll(ctx, s.verdictKey(strconv.FormatInt(w, 10))))
	}
	if len(cmds) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
	}
	out := map[string]Verdicts{}
	for _, c := range cmds {
		for f, v := range c.Val() {
			i := strings.LastIndexByte(f, '|')
			if i < 0 {
				continue
			}
			key, what := f[:i], f[i+1:]
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("verdict count %s=%q: %w", f, v, err)
			}
			vv := out[key]
			switch what {
			case "requests":
				vv.Requests += n
			case "flagged":
				vv.Flagged += int64(n)
			}
			out[key] = vv
		}
	}
	return out, nil
}

// Canary is a candidate model served to a share of the nodes and watched.
type Canary struct {
	// SHA256 is the candidate release's version.
	SHA256  string    `json:"sha256"`
	Started time.Time `json:"started"`
	// Watch holds the sections the decision compares: the candidate's
	// sections that differ from the release in force (RoleCanary) and the
	// sections in force of the same workloads (RoleStable), by sha256.
	Watch map[string]string `json:"watch"`
}

// StartCanary puts a stored release under watch as the canary, watching
// the sections in which it differs from the release in force.
func (s *Store) StartCanary(ctx context.Context, sha string, now time.Time) error {
	can, err := s.Release(ctx, sha)
	if err != nil {
		return err
	}
	c := Canary{SHA256: sha, Started: now.UTC(), Watch: map[string]string{}}
	var stable *Release
	if cur, err := s.Current(ctx); err != nil {
		return err
	} else if cur != "" {
		if stable, err = s.Release(ctx, cur); err != nil {
			return err
		}
	}
	for w, csha := range can.Sections {
		ssha := ""
		if stable != nil {
			_, ssha = stable.SectionFor(w)
		}
		if csha == ssha {
			continue
		}
		c.Watch[csha] = RoleCanary
		if ssha != "" {
			c.Watch[ssha] = RoleStable
		}
	}
	if stable != nil {
		// A workload the candidate no longer has a section for gets its
		// fallback instead of the stable section.
		for w, ssha := range stable.Sections {
			if _, ok := can.Sections[w]; ok {
				continue
			}
			if _, csha := can.SectionFor(w); csha != ssha {
				c.Watch[ssha] = RoleStable
				if csha != "" {
					c.Watch[csha] = RoleCanary
				}
			}
		}
	}
	b, _ := json.Marshal(c)
	pipe := s.rdb.TxPipeline()
	pipe.Set(ctx, s.rolloutKey("canary"), b, 0)
	pipe.Set(ctx, s.rolloutKey("canary-version"), sha, 0)
	_, err = pipe.Exec(ctx)
	return err
}

// Canary returns the canary under watch (nil when none).
func (s *Store) Canary(ctx context.Context) (*Canary, error) {
	b, err := s.rdb.Get(ctx, s.rolloutKey("canary")).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c Canary
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("stored canary %.80q: %w", b, err)
	}
	return &c, nil
}

// watchSet says which role a section plays in the canary under watch.
type watchSet struct {
	version string
	roles   map[string]string
}

func (w *watchSet) role(sha string) string {
	if w == nil {
		return ""
	}
	return w.roles[sha]
}

// watchCache keeps the canary's watch set between batches: the collector
// reads the small canary-version key with every batch, and the set (up to
// two sections per workload) only when it changed.
type watchCache struct {
	mu  sync.Mutex
	set *watchSet
}

// watched returns the sections the canary under watch compares (nil when
// none).
func (s *Store) watched(ctx context.Context) (*watchSet, error) {
	c := &s.watch
	c.mu.Lock()
	defer c.mu.Unlock()
	v, err := s.rdb.Get(ctx, s.rolloutKey("canary-version")).Result()
	if errors.Is(err, redis.Nil) {
		v, err = "", nil
	}
	if err != nil {
		return nil, err
	}
	switch {
	case v == "":
		c.set = nil
	case c.set == nil || c.set.version != v:
		can, err := s.Canary(ctx)
		if err != nil {
			return nil, err
		}
		c.set = nil
		if can != nil && can.SHA256 == v {
			c.set = &watchSet{version: v, roles: can.Watch}
		}
	}
	return c.set, nil
}

// Outcomes of a canary.
const (
	Promoted   = "promoted"
	RolledBack = "rolled_back"
)

// Decision is what became of a canary, and on what evidence.
type Decision struct {
	SHA256  string    `json:"sha256"`
	Stable  string    `json:"stable"`
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason"`
	Canary  Verdicts  `json:"canary"`
	Against Verdicts  `json:"against"`
	At      time.Time `json:"at"`
}

// maxDecisions bounds the decision history.
const maxDecisions = 100

// EndCanary records a decision about the canary in one transaction: the
// canary is no longer watched and, when promoted, is the version in force.
// It fails without changing anything when the canary is not d.SHA256 any
// more (another replica decided first).
func (s *Store) EndCanary(ctx context.Context, d Decision) error {
	if d.Outcome != Promoted && d.Outcome != RolledBack {
		return fmt.Errorf("decision outcome %q: want %s or %s", d.Outcome, Promoted, RolledBack)
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	key := s.rolloutKey("canary")
	return s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		raw, err := tx.Get(ctx, key).Bytes()
		var c Canary
		if err != nil || json.Unmarshal(raw, &c) != nil || c.SHA256 != d.SHA256 {
			return fmt.Errorf("canary %s is no longer under watch", d.SHA256)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key, s.rolloutKey("canary-version"))
			if d.Outcome == Promoted {
				p.Set(ctx, s.rolloutKey("current"), d.SHA256, 0)
			}
			p.LPush(ctx, s.rolloutKey("decisions"), b)
			p.LTrim(ctx, s.rolloutKey("decisions"), 0, maxDecisions-1)
			return nil
		})
		return err
	}, key)
}

// Decisions returns up to n canary decisions, newest first.
func (s *Store) Decisions(ctx context.Context, n int64) ([]Decision, error) {
	vals, err := s.rdb.LRange(ctx, s.rolloutKey("decisions"), 0, n-1).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Decision, 0, len(vals))
	for _, v := range vals {
		var d Decision
		if err := json.Unmarshal([]byte(v), &d); err != nil {
			return nil, fmt.Errorf("stored decision %q: %w", v, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// Clear deletes every key under the store's prefix, on every node of a
// cluster: for a store that belongs to one run (meshward run on a given
// Redis), never for the control plane's own.
func (s *Store) Clear(ctx context.Context) error {
	clear := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, s.cfg.Prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			if err := c.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, clear)
	case *redis.Client:
		return clear(ctx, c)
	}
	return fmt.Errorf("clearing a store on a %T is not supported", s.rdb)
}
