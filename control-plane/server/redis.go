package server

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisClient is a client of one Redis, or of a Redis Cluster when several
// seed addresses are given (comma-separated).
func RedisClient(addrs string) redis.UniversalClient {
	list := strings.Split(addrs, ",")
	for i := range list {
		list[i] = strings.TrimSpace(list[i])
	}
	if len(list) > 1 {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: list})
	}
	return redis.NewClient(&redis.Options{Addr: list[0]})
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
