// Package store keeps what the control plane aggregates in Redis (through
// github.com/redis/go-redis/v9, so a single server, a cluster or the
// embedded server are one code path): windowed edge counters, per-source
// fan-out (HyperLogLog), per-route statistics, capped sample streams for
// training, model versions as releases of per-workload sections
// (release.go), incidents, the flagged and total requests of the canary and
// the stable sections it is compared with, and the rollout's state
// (rollout.go).
//
// Every key has a bounded size or a TTL. Keys of a destination's flows carry
// its name as a hash tag ({dst}) and a source's fan-out its principal, so a
// Redis Cluster spreads workloads over slots and each operation stays on one.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// Config is everything the store takes. Defaults in DefaultConfig.
type Config struct {
	// Prefix starts every key.
	Prefix string
	// Window is the width of the counting windows.
	Window time.Duration
	// Retention is how long windowed keys live.
	Retention time.Duration
	// MaxSamples caps each destination's training sample stream.
	MaxSamples int64
	// MaxModels is how many model versions are kept.
	MaxModels int64
	// MaxIncidents caps the incident list.
	MaxIncidents int64
	// BatchTTL is how long a batch's idempotency markers live: a retry of
	// the batch within it is not counted again. It must outlast the
	// collector's clock-skew window twice over (a record older than that
	// is refused anyway).
	BatchTTL time.Duration
}

// DefaultConfig returns the defaults, in one place.
func DefaultConfig() Config {
	return Config{Prefix: "mw", Window: time.Minute, Retention: 24 * time.Hour, MaxSamples: 50_000, MaxModels: 20, MaxIncidents: 1000, BatchTTL: 15 * time.Minute}
}

// ErrConfig is wrapped by every problem Validate reports.
var ErrConfig = errors.New("store")

// Validate reports every problem with the configuration (no flag sets
// these: each is named by its field).
func (c Config) Validate() error {
	var errs []error
	if c.Prefix == "" || strings.ContainsAny(c.Prefix, "{} ") {
		errs = append(errs, fmt.Errorf("%w: Prefix %q must be non-empty, without braces or spaces", ErrConfig, c.Prefix))
	}
	if c.Window < time.Second || c.Retention < c.Window {
		errs = append(errs, fmt.Errorf("%w: Window %v must be ≥ 1s and Retention %v ≥ Window", ErrConfig, c.Window, c.Retention))
	}
	if c.BatchTTL < time.Second {
		errs = append(errs, fmt.Errorf("%w: BatchTTL %v must be ≥ 1s", ErrConfig, c.BatchTTL))
	}
	if c.MaxSamples < 1 || c.MaxModels < 1 || c.MaxIncidents < 1 {
		errs = append(errs, fmt.Errorf("%w: MaxSamples %d, MaxModels %d and MaxIncidents %d must be positive", ErrConfig, c.MaxSamples, c.MaxModels, c.MaxIncidents))
	}
	return errors.Join(errs...)
}

// Store is the Redis-backed store. It is safe for concurrent use.
type Store struct {
	rdb redis.UniversalClient
	cfg Config
	// contents caches content models read (release.go).
	contents contentCache
	// watch caches the canary's sections under watch (rollout.go).
	watch watchCache
	// scriptLoaded: the ingest script was loaded (SCRIPT LOAD) once; a
	// Redis that lost it since answers NOSCRIPT, and the script is sent
	// again.
	scriptLoaded atomic.Bool
}

// ErrNotFound is returned for a missing model or key.
var ErrNotFound = errors.New("not found")

// New returns a store on a client (single server, cluster or ring).
func New(rdb redis.UniversalClient, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, cfg: cfg}, nil
}

func (s *Store) window(t time.Time) int64 { return t.UnixNano() / int64(s.cfg.Window) }

// tag makes a key hash-tagged by name: every key of one workload (or one
// source's fan-out) lands on one Cluster slot.
func (s *Store) tag(name string, parts ...string) string {
	return s.cfg.Prefix + ":{" + name + "}:" + strings.Join(parts, ":")
}

// Ingest stores a batch of records without an idempotency key (see
// IngestBatch).
func (s *Store) Ingest(ctx context.Context, recs []record.Record) error {
	_, err := s.IngestBatch(ctx, Batch{Records: recs})
	return err
}

// Destinations lists the destinations records arrived for within the
// retention.
func (s *Store) Destinations(ctx context.Context) ([]string, error) {
	return s.rdb.SMembers(ctx, s.cfg.Prefix+":destinations").Result()
}

// SetCurrent records which model version (release) is in force.
func (s *Store) SetCurrent(ctx context.Context, sha string) error {
	if _, err := s.Release(ctx, sha); err != nil {
		return err
	}
	return s.rdb.Set(ctx, s.rolloutKey("current"), sha, 0).Err()
}

// Current returns the version in force ("" when none).
func (s *Store) Current(ctx context.Context) (string, error) {
	sha, err := s.rdb.Get(ctx, s.rolloutKey("current")).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return sha, err
}

// Edge is a counted (source, method, route) edge of a destination.
type Edge struct {
	Source, Method, Route string
	Count                 int64
}

// Edges returns the edges of a destination counted in the window holding t.
func (s *Store) Edges(ctx context.Context, dst string, t time.Time) ([]Edge, error) {
	m, err := s.rdb.HGetAll(ctx, s.tag(dst, "edges", strconv.FormatInt(s.window(t), 10))).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Edge, 0, len(m))
	for k, v := range m {
		parts := strings.SplitN(k, "|", 3)
		n, _ := strconv.ParseInt(v, 10, 64)
		if len(parts) == 3 {
			out = append(out, Edge{Source: parts[0], Method: parts[1], Route: parts[2], Count: n})
		}
	}
	return out, nil
}

// FanOut estimates how many distinct destinations a source called in the
// windows from since to until (HyperLogLog, about 1 % error).
func (s *Store) FanOut(ctx context.Context, src string, since, until time.Time) (int64, error) {
	var keys []string
	for w := s.window(since); w <= s.window(until); w++ {
		keys = append(keys, s.tag(src, "fanout", strconv.FormatInt(w, 10)))
	}
	if len(keys) == 0 {
		return 0, nil
	}
	return s.rdb.PFCount(ctx, keys...).Result()
}

// Samples returns up to n of the most recent normal requests of a
// destination, oldest first, for training (n also bounds the stream entries
// read).
func (s *Store) Samples(ctx context.Context, dst string, n int64) ([]models.Request, error) {
	msgs, err := s.rdb.XRevRangeN(ctx, s.tag(dst, "samples"), "+", "-", n).Result()
	if err != nil {
		return nil, err
	}
	var out []models.Request
	for i := len(msgs) - 1; i >= 0; i-- {
		raw, _ := msgs[i].Values["r"].(string)
		var qs []models.Request
		if err := json.Unmarshal([]byte(raw), &qs); err != nil {
			return nil, fmt.Errorf("sample entry %s of %s: %w", msgs[i].ID, dst, err)
		}
		out = append(out, qs...)
	}
	if int64(len(out)) > n {
		out = out[int64(len(out))-n:]
	}
	return out, nil
}

// Sample is one stored training sample and when the store took it in.
type Sample struct {
	At      time.Time
	Request models.Request
}

// samplePage is how many stream entries one read of a sample stream takes.
const samplePage = 500

// ForEachSample calls fn with every sample a destination's stream holds
// (at most MaxSamples, the stream's cap), oldest first, a page of entries
// at a time, so the caller decides what to keep. A stream entry that does
// not decode is an error naming it.
func (s *Store) ForEachSample(ctx context.Context, dst string, fn func(Sample)) error {
	key := s.tag(dst, "samples")
	start := "-"
	for {
		msgs, err := s.rdb.XRangeN(ctx, key, start, "+", samplePage).Result()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			raw, _ := m.Values["r"].(string)
			var qs []models.Request
			if err := json.Unmarshal([]byte(raw), &qs); err != nil {
				return fmt.Errorf("sample entry %s of %s: %w", m.ID, dst, err)
			}
			at := streamTime(m.ID)
			for i := range qs {
				fn(Sample{At: at, Request: qs[i]})
			}
		}
		if len(msgs) < samplePage {
			return nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// PutIncident appends an incident (any JSON value) to the capped list.
func (s *Store) PutIncident(ctx context.Context, incident any) error {
	b, err := json.Marshal(incident)
	if err != nil {
		return err
	}
	key := s.cfg.Prefix + ":incidents"
	pipe := s.rdb.TxPipeline()
	pipe.LPush(ctx, key, b)
	pipe.LTrim(ctx, key, 0, s.cfg.MaxIncidents-1)
	if _, err = pipe.Exec(ctx); err != nil {
		return err
	}
	// The count is a key of its own, outside the transaction: on a Redis
	// Cluster it may live on another node than the list.
	return s.rdb.Incr(ctx, s.tag("incidents", "total")).Err()
}

// IncidentsTotal returns how many incidents were ever recorded (the list
// keeps only the newest; this count is never trimmed).
func (s *Store) IncidentsTotal(ctx context.Context) (int64, error) {
	n, err := s.rdb.Get(ctx, s.tag("incidents", "total")).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// Incidents returns up to n incidents, newest first, as raw JSON.
func (s *Store) Incidents(ctx context.Context, n int64) ([]json.RawMessage, error) {
	vals, err := s.rdb.LRange(ctx, s.cfg.Prefix+":incidents", 0, n-1).Result()
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(vals))
	for i, v := range vals {
		out[i] = json.RawMessage(v)
	}
	return out, nil
}

// PutQuarantine keeps a standing quarantine (any JSON value) under its id,
// for sinks whose targets keep no state of their own (Envoy RBAC over
// xDS): a restarted control plane, and every replica, reads them back.
// The number standing is capped by the decision guard rails.
func (s *Store) PutQuarantine(ctx context.Context, id string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.rdb.HSet(ctx, s.tag("quarantines", "standing"), id, b).Err()
}

// DeleteQuarantine forgets a quarantine (released or expired).
func (s *Store) DeleteQuarantine(ctx context.Context, id string) error {
	return s.rdb.HDel(ctx, s.tag("quarantines", "standing"), id).Err()
}

// Quarantines returns the standing quarantines by id, as raw JSON.
func (s *Store) Quarantines(ctx context.Context) (map[string]json.RawMessage, error) {
	m, err := s.rdb.HGetAll(ctx, s.tag("quarantines", "standing")).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(m))
	for id, v := range m {
		out[id] = json.RawMessage(v)
	}
	return out, nil
}

// releasesKept is how long a release is remembered: longer than any
// detection horizon a new leader replays.
const releasesKept = 24 * time.Hour

// NoteRelease remembers that an operator released a principal's
// quarantine at a time (the control plane's clock). A leader replaying the
// observation stream (after a failover) skips that principal's records
// received until then: the evidence the operator weighed does not
// quarantine it again. Only the admin API writes here; entries older than
// a day are dropped on each write.
func (s *Store) NoteRelease(ctx context.Context, principal string, at time.Time) error {
	key := s.tag("quarantines", "released")
	have, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return err
	}
	var stale []string
	for p, v := range have {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || at.Sub(time.UnixMilli(ms)) > releasesKept {
			stale = append(stale, p)
		}
	}
	pipe := s.rdb.TxPipeline()
	if len(stale) > 0 {
		pipe.HDel(ctx, key, stale...)
	}
	pipe.HSet(ctx, key, principal, strconv.FormatInt(at.UnixMilli(), 10))
	_, err = pipe.Exec(ctx)
	return err
}

// Releases returns when each principal's quarantine was last released.
func (s *Store) Releases(ctx context.Context) (map[string]time.Time, error) {
	m, err := s.rdb.HGetAll(ctx, s.tag("quarantines", "released")).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]time.Time, len(m))
	for p, v := range m {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[p] = time.UnixMilli(ms)
		}
	}
	return out, nil
}

// MaxObservationBatches caps the observation stream (approximately).
const MaxObservationBatches = 10_000

func (s *Store) observationsKey() string { return s.cfg.Prefix + ":observations" }

// PublishBatch appends a batch of records to the observation stream: every
// replica's collector does, and the leader reads the stream, so lateral
// movement is detected over all the records whichever replica got them.
func (s *Store) PublishBatch(ctx context.Context, recs []record.Record) error {
	if len(recs) == 0 {
		return nil
	}
	b, err := json.Marshal(recs)
	if err != nil {
		return err
	}
	return s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.observationsKey(), MaxLen: MaxObservationBatches, Approx: true,
		Values: map[string]any{"b": b}}).Err()
}

// streamTime is the time a stream entry id (<ms>-<seq>) was assigned.
func streamTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

// ReadBatches returns the records of the batches after the id given,
// waiting up to block for one (a negative block does not wait), and the id
// to read after next. A batch
// that does not decode is skipped (it is reported in the error, with the
// records that did decode).
func (s *Store) ReadBatches(ctx context.Context, after string, block time.Duration) ([]record.Record, string, error) {
	res, err := s.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{s.observationsKey(), after}, Block: block, Count: 100}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, after, nil
	}
	if err != nil {
		return nil, after, err
	}
	var out []record.Record
	var errs []error
	for _, st := range res {
		for _, m := range st.Messages {
			after = m.ID
			raw, _ := m.Values["b"].(string)
			var recs []record.Record
			if err := json.Unmarshal([]byte(raw), &recs); err != nil {
				errs = append(errs, fmt.Errorf("observation batch %s: %w", m.ID, err))
				continue
			}
			received := streamTime(m.ID)
			for i := range recs {
				recs[i].Received = received
			}
			out = append(out, recs...)
		}
	}
	return out, after, errors.Join(errs...)
}
