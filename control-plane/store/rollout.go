package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// VersionVerdicts sums, per model version, the verdicts reported in the
// windows from since to until.
func (s *Store) VersionVerdicts(ctx context.Context, since, until time.Time) (map[string]Verdicts, error) {
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
			sha, what, ok := strings.Cut(f, "|")
			if !ok {
				continue
			}
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("verdict count %s=%q: %w", f, v, err)
			}
			vv := out[sha]
			switch what {
			case "requests":
				vv.Requests += n
			case "flagged":
				vv.Flagged += int64(n)
			}
			out[sha] = vv
		}
	}
	return out, nil
}

// Canary is a candidate model served to a share of the nodes and watched.
type Canary struct {
	SHA256  string    `json:"sha256"`
	Started time.Time `json:"started"`
}

// StartCanary puts a stored model under watch as the canary.
func (s *Store) StartCanary(ctx context.Context, sha string, now time.Time) error {
	if _, err := s.Model(ctx, sha); err != nil {
		return err
	}
	b, _ := json.Marshal(Canary{SHA256: sha, Started: now.UTC()})
	return s.rdb.Set(ctx, s.rolloutKey("canary"), b, 0).Err()
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
		return nil, fmt.Errorf("stored canary %q: %w", b, err)
	}
	return &c, nil
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
			p.Del(ctx, key)
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
