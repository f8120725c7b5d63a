// Package leader elects one control-plane replica to train and enforce,
// with a lock in Redis (outside Kubernetes; a Lease takes its place in a
// cluster): SET NX with a TTL, renewed by the holder well before it lapses,
// taken over by another replica only once it has. Every replica keeps
// serving xDS and the collector whatever the outcome.
package leader

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config is everything an election takes.
type Config struct {
	// Key is the lock's key; Identity names this replica.
	Key, Identity string
	// TTL is how long a lock lasts unless renewed; the holder renews every
	// TTL/3.
	TTL time.Duration
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	if c.Key == "" || c.Identity == "" || c.TTL < 100*time.Millisecond {
		return errors.New("leader: key and identity are required and ttl must be at least 100ms")
	}
	return nil
}

// renew extends the lock only if this replica still holds it.
var renew = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end`)

// release deletes the lock only if this replica holds it.
var release = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`)

// Elector campaigns for the lock until its context ends.
type Elector struct {
	cfg     Config
	rdb     redis.UniversalClient
	mu      sync.Mutex
	leading bool
	changed chan bool
}

// New returns an elector, or the configuration's problem.
func New(rdb redis.UniversalClient, cfg Config) (*Elector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Elector{cfg: cfg, rdb: rdb, changed: make(chan bool, 16)}, nil
}

// Leading reports whether this replica holds the lock now.
func (e *Elector) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

// Changes delivers every change of leadership (true: became leader).
func (e *Elector) Changes() <-chan bool { return e.changed }

func (e *Elector) set(leading bool) {
	e.mu.Lock()
	changed := e.leading != leading
	e.leading = leading
	e.mu.Unlock()
	if changed {
		select {
		case e.changed <- leading:
		default:
		}
	}
}

// Run campaigns and renews until ctx ends, then releases the lock.
func (e *Elector) Run(ctx context.Context) {
	t := time.NewTicker(e.cfg.TTL / 3)
	defer t.Stop()
	for {
		e.step(ctx)
		select {
		case <-ctx.Done():
			if e.Leading() {
				rctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = release.Run(rctx, e.rdb, []string{e.cfg.Key}, e.cfg.Identity).Err()
				cancel()
			}
			e.set(false)
			return
		case <-t.C:
		}
	}
}

// step takes or renews the lock once.
func (e *Elector) step(ctx context.Context) {
	ms := e.cfg.TTL.Milliseconds()
	if e.Leading() {
		n, err := renew.Run(ctx, e.rdb, []string{e.cfg.Key}, e.cfg.Identity, ms).Int()
		e.set(err == nil && n == 1)
		return
	}
	ok, err := e.rdb.SetNX(ctx, e.cfg.Key, e.cfg.Identity, e.cfg.TTL).Result()
	e.set(err == nil && ok)
}
