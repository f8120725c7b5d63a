// Package leader elects one control-plane replica to train and enforce,
// with a lock in Redis (outside Kubernetes; a Lease takes its place in a
// cluster): SET NX with a TTL, renewed by the holder well before it lapses,
// taken over by another replica only once it has. Every replica keeps
// serving xDS and the collector whatever the outcome.
//
// Leadership is held against a local deadline shorter than the lock or
// Lease: a replica that has not renewed in time stops leading on its own
// clock, before anyone else can take over, even if it never hears back from
// Redis or the API server. And each write a leader makes is fenced: Check
// asks Redis or the API server, at the time of the write, whether this
// term still holds the lock, so a stale leader cannot apply.
package leader

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotLeader is returned by Check when this replica does not hold the
// leadership (any more): a write must not go out.
var ErrNotLeader = errors.New("this replica does not lead (any more)")

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

// Elector campaigns for the lock until its context ends. The lock's value
// is the identity and a fencing token (a counter in Redis, one per term),
// so a replica's earlier term never passes for its current one.
type Elector struct {
	cfg      Config
	rdb      redis.UniversalClient
	mu       sync.Mutex
	leading  bool
	value    string    // identity#token of the term held
	deadline time.Time // the local deadline of the term
	term     uint64
	changed  chan bool
}

// Term counts the terms won.
func (e *Elector) Term() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.term
}

// New returns an elector, or the configuration's problem.
func New(rdb redis.UniversalClient, cfg Config) (*Elector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Elector{cfg: cfg, rdb: rdb, changed: make(chan bool, 16)}, nil
}

// Leading reports whether this replica holds the lock now: it won or
// renewed it within the last two thirds of its TTL, on the local clock.
func (e *Elector) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading && time.Now().Before(e.deadline)
}

// Check asks Redis whether the lock still holds this term's value.
func (e *Elector) Check(ctx context.Context) error {
	e.mu.Lock()
	value, ok := e.value, e.leading && time.Now().Before(e.deadline)
	e.mu.Unlock()
	if !ok {
		return ErrNotLeader
	}
	got, err := e.rdb.Get(ctx, e.cfg.Key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("checking the leader lock: %w", err)
	}
	if got != value {
		return ErrNotLeader
	}
	return nil
}

// Changes delivers every change of leadership (true: became leader).
func (e *Elector) Changes() <-chan bool { return e.changed }

// set records the outcome of a campaign or renewal begun at start: a term
// won or renewed lasts locally until start plus two thirds of the TTL.
func (e *Elector) set(leading bool, value string, start time.Time) {
	e.mu.Lock()
	changed := e.leading != leading
	if leading && value != e.value {
		e.term++
	}
	e.leading = leading
	if leading {
		e.value, e.deadline = value, start.Add(e.cfg.TTL*2/3)
	} else {
		e.value, e.deadline = "", time.Time{}
	}
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
			e.mu.Lock()
			value := e.value
			e.mu.Unlock()
			if value != "" {
				rctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = release.Run(rctx, e.rdb, []string{e.cfg.Key}, value).Err()
				cancel()
			}
			e.set(false, "", time.Time{})
			return
		case <-t.C:
		}
	}
}

// step takes or renews the lock once.
func (e *Elector) step(ctx context.Context) {
	ms := e.cfg.TTL.Milliseconds()
	start := time.Now()
	e.mu.Lock()
	value := e.value
	e.mu.Unlock()
	if value != "" && e.Leading() {
		n, err := renew.Run(ctx, e.rdb, []string{e.cfg.Key}, value, ms).Int()
		e.set(err == nil && n == 1, value, start)
		return
	}
	token, err := e.rdb.Incr(ctx, e.cfg.Key+":fence").Result()
	if err != nil {
		e.set(false, "", start)
		return
	}
	value = e.cfg.Identity + "#" + strconv.FormatInt(token, 10)
	ok, err := e.rdb.SetNX(ctx, e.cfg.Key, value, e.cfg.TTL).Result()
	e.set(err == nil && ok, value, start)
}
