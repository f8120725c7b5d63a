package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisAuth are the credentials and TLS settings of the control plane's
// Redis connections (an ACL user and its password; TLS with a CA and,
// for Redis' tls-auth-clients, a client certificate).
type RedisAuth struct {
	// Username is the ACL user (empty: "default").
	Username string
	// Password is the user's password (from -redis-password-file).
	Password string
	// TLS, when set, connects over TLS.
	TLS *tls.Config
}

func (a RedisAuth) validate() error {
	if a.Username != "" && a.Password == "" {
		return errors.New("-redis-username needs -redis-password-file")
	}
	return nil
}

// RedisClient is a client of one Redis, or of a Redis Cluster when several
// seed addresses are given (comma-separated), without credentials.
func RedisClient(addrs string) redis.UniversalClient { return RedisClientWith(addrs, RedisAuth{}) }

// RedisClientWith is RedisClient with credentials and TLS.
func RedisClientWith(addrs string, a RedisAuth) redis.UniversalClient {
	list := strings.Split(addrs, ",")
	for i := range list {
		list[i] = strings.TrimSpace(list[i])
	}
	if len(list) > 1 {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: list, Username: a.Username, Password: a.Password, TLSConfig: a.TLS})
	}
	return redis.NewClient(&redis.Options{Addr: list[0], Username: a.Username, Password: a.Password, TLSConfig: a.TLS})
}

// ErrRedisAuth: Redis refused the control plane's credentials (or wanted
// some and was given none).
var ErrRedisAuth = errors.New("redis refused the credentials")

// checkRedis refuses to start against a Redis that does not accept the
// configured credentials: an unauthenticated or wrongly authenticated
// control plane would fail on every write. A Redis that cannot be reached
// yet is only logged (readiness reports it; the store retries). A Redis
// that needs no password while one is configured is logged as a warning:
// anyone who reaches it can rewrite the models.
func (s *Server) checkRedis(ctx context.Context, addr string) error {
	if s.embedded != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := s.rdb.Ping(ctx).Err()
	switch {
	case err == nil:
	case isAuthError(err):
		return fmt.Errorf("%w: Redis at %s: %v (give the ACL user and password with -redis-username and -redis-password-file, and TLS with -redis-tls)", ErrRedisAuth, addr, err)
	default:
		s.log.Warn("Redis not reachable yet: the control plane starts, not ready", "redis", addr, "err", err)
		return nil
	}
	if s.cfg.RedisAuth.Password != "" {
		anon := RedisClientWith(addr, RedisAuth{TLS: s.cfg.RedisAuth.TLS})
		defer anon.Close()
		if anon.Ping(ctx).Err() == nil {
			s.log.Warn("Redis accepts connections without a password: anyone who reaches it can rewrite the models (disable its default user)", "redis", addr)
		}
	}
	return nil
}

// isAuthError recognizes Redis' answers to missing or wrong credentials.
func isAuthError(err error) bool {
	for _, p := range []string{"NOAUTH", "WRONGPASS", "NOPERM", "ERR AUTH"} {
		if redis.HasErrorPrefix(err, p) || strings.Contains(err.Error(), p) {
			return true
		}
	}
	return false
}

// expireEmbedded counts the embedded server's TTLs down as the clock goes,
// once every expireEvery, until ctx ends: miniredis lowers them only when
// told (FastForward), so without this windowed keys and the leader lock
// never expire and a long-running serve grows without bound. (Its ClockTTL
// mode does the same on every command, but walks and sorts every key each
// time: a millisecond a command at 2,000 keys.)
func (s *Server) expireEmbedded(ctx context.Context) {
	now, every := s.clock, s.expireEvery
	if now == nil {
		now = time.Now
	}
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	last := now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n := now()
			if d := n.Sub(last); d > 0 {
				s.embedded.FastForward(d)
				last = n
			}
		}
	}
}
