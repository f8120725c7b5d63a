package store

import (
	"context"
	"time"
)

// ReadinessTTL is how long a release's readiness assessments are kept
// after the last round that assessed it.
const ReadinessTTL = 7 * 24 * time.Hour

func (s *Store) readinessKey(version string) string { return s.rolloutKey("readiness:" + version) }

// PutReadiness stores a training round's readiness assessments (JSON by
// workload) with the release they are of, replacing earlier ones.
func (s *Store) PutReadiness(ctx context.Context, version string, byWorkload map[string][]byte) error {
	key := s.readinessKey(version)
	pipe := s.rdb.TxPipeline()
	pipe.Del(ctx, key)
	if len(byWorkload) > 0 {
		// In commands of at most maxArgs arguments each.
		args := make([]any, 0, 2*len(byWorkload))
		for w, b := range byWorkload {
			args = append(args, w, b)
		}
		for len(args) > 0 {
			n := min(len(args), maxArgs)
			pipe.HSet(ctx, key, args[:n]...)
			args = args[n:]
		}
		pipe.Expire(ctx, key, ReadinessTTL)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Readiness returns the assessments stored with a release, by workload.
func (s *Store) Readiness(ctx context.Context, version string) (map[string][]byte, error) {
	m, err := s.rdb.HGetAll(ctx, s.readinessKey(version)).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(m))
	for w, v := range m {
		out[w] = []byte(v)
	}
	return out, nil
}
