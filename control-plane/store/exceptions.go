package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Exceptions (meshward allow) are kept as JSON by id under one hash tag,
// with a version bumped by every change in the same transaction: every
// replica polls the version and, when it moved, reads the exceptions again
// and serves them to the filters.

func (s *Store) exceptionsKey() string        { return s.cfg.Prefix + ":{exceptions}:all" }
func (s *Store) exceptionsVersionKey() string { return s.cfg.Prefix + ":{exceptions}:version" }

// ErrExists refuses an exception whose id is taken.
var ErrExists = errors.New("exists already")

// ErrTooMany refuses an exception beyond the store's cap.
var ErrTooMany = errors.New("too many exceptions")

// PutException stores a new exception under its id, unless the id is
// taken or max exceptions are stored already.
func (s *Store) PutException(ctx context.Context, id string, v []byte, max int) error {
	n, err := s.rdb.HLen(ctx, s.exceptionsKey()).Result()
	if err != nil {
		return err
	}
	if n >= int64(max) {
		return fmt.Errorf("%w: %d stored, at most %d (-max-exceptions): revoke some, or let them expire", ErrTooMany, n, max)
	}
	pipe := s.rdb.TxPipeline()
	set := pipe.HSetNX(ctx, s.exceptionsKey(), id, v)
	pipe.Incr(ctx, s.exceptionsVersionKey())
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	if !set.Val() {
		return fmt.Errorf("exception %q: %w", id, ErrExists)
	}
	return nil
}

// DeleteException removes an exception; false when there was none.
func (s *Store) DeleteException(ctx context.Context, id string) (bool, error) {
	pipe := s.rdb.TxPipeline()
	del := pipe.HDel(ctx, s.exceptionsKey(), id)
	pipe.Incr(ctx, s.exceptionsVersionKey())
	if _, err := pipe.Exec(ctx); err != nil {
		return false, err
	}
	return del.Val() == 1, nil
}

// Exceptions returns every stored exception, by id, as JSON.
func (s *Store) Exceptions(ctx context.Context) (map[string][]byte, error) {
	m, err := s.rdb.HGetAll(ctx, s.exceptionsKey()).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(m))
	for id, v := range m {
		out[id] = []byte(v)
	}
	return out, nil
}

// ExceptionsVersion returns a number every change to the exceptions moves
// (0 before any).
func (s *Store) ExceptionsVersion(ctx context.Context) (int64, error) {
	n, err := s.rdb.Get(ctx, s.exceptionsVersionKey()).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}
