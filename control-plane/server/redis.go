package server

import (
	"strings"

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
