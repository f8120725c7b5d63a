package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshward/meshward/internal/redistest"
)

const redisPassword = "a-long-redis-password-for-the-tests"

// TestServeRefusesRedisWithoutItsCredentials: against a redis-server whose
// only user is an ACL user with a password (the default user off), serve
// refuses to start without the credentials, or with a wrong password, and
// says which flags to give; with them it works, with the user's rights as
// manifests/istio/controlplane/redis.yaml grants them (no dangerous
// commands).
func TestServeRefusesRedisWithoutItsCredentials(t *testing.T) {
	rds := redistest.StartWith(t, redistest.Options{Password: redisPassword, Rules: []string{"~*", "&*", "+@all", "-@dangerous"}})
	for name, a := range map[string]RedisAuth{
		"no credentials":    {},
		"a wrong password":  {Username: "meshward", Password: "not-the-password"},
		"another user":      {Username: "default", Password: redisPassword},
		"no user, password": {Password: redisPassword},
	} {
		cfg := testConfig()
		cfg.Redis, cfg.RedisAuth = rds.Addr, a
		s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		err = s.Start(context.Background())
		if err == nil {
			s.Close()
			t.Errorf("%s: serve started", name)
			continue
		}
		if !errors.Is(err, ErrRedisAuth) || !strings.Contains(err.Error(), "-redis-username") || !strings.Contains(err.Error(), "-redis-password-file") {
			t.Errorf("%s: %v; want ErrRedisAuth naming the flags", name, err)
		}
	}
	s := startWith(t, rds.Addr, func(c *Config) { c.RedisAuth = RedisAuth{Username: "meshward", Password: redisPassword} })
	var b strings.Builder
	for i := 0; i < 400; i++ {
		b.WriteString(batch())
	}
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping with the credentials: %d", code)
	}
	if code, _ := get(t, s.AdminURL+"/readyz"); code != 200 {
		t.Errorf("readyz with the credentials: %d", code)
	}
	eventually(t, "a leader", s.elector.Leading)
	if rep, err := s.Train(context.Background()); err != nil || !rep.Published {
		t.Errorf("training without dangerous commands: %+v %v", rep, err)
	}
	if _, m := get(t, s.AdminURL+"/metrics"); !strings.Contains(m, "meshward_redis_up 1") {
		t.Error("metrics say Redis is down")
	}
}

// TestServeOnALockedRedisCluster: on a three-node Redis Cluster with an ACL
// user and TLS everywhere (clients with certificates, the cluster bus), serve
// refuses to start without the password, and with it and TLS stores, elects,
// trains and rolls out.
func TestServeOnALockedRedisCluster(t *testing.T) {
	tlsFiles := redistest.NewTLS(t)
	cluster := redistest.StartClusterWith(t, redistest.Options{Password: redisPassword, TLS: tlsFiles})
	addrs := strings.Join(cluster.Addrs, ",")

	cfg := testConfig()
	cfg.Redis, cfg.RedisAuth = addrs, RedisAuth{TLS: tlsFiles.Client}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrRedisAuth) {
		s.Close()
		t.Fatalf("TLS without the password: %v, want ErrRedisAuth", err)
	}

	s = startWith(t, addrs, func(c *Config) {
		c.RedisAuth = RedisAuth{Username: "meshward", Password: redisPassword, TLS: tlsFiles.Client}
	})
	var b strings.Builder
	for i := 0; i < 400; i++ {
		b.WriteString(batch())
	}
	if code := ship(t, s, b.String()); code != 200 {
		t.Fatalf("shipping to the locked cluster: %d", code)
	}
	eventually(t, "a leader", s.elector.Leading)
	rep, err := s.Train(context.Background())
	if err != nil || !rep.Published {
		t.Fatalf("training on the locked cluster: %+v %v", rep, err)
	}
	// Each group is served its section of the release, versioned by the
	// section's sha256.
	rel, err := s.store.Release(context.Background(), rep.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	_, want := rel.SectionFor("cart.shop")
	sc := connect(t, s.ADSAddr, "cart-1")
	eventually(t, "the model over ADS", func() bool { return last(sc.seen()) == want })
	if code, _ := get(t, s.AdminURL+"/readyz"); code != 200 {
		t.Errorf("readyz on the locked cluster: %d", code)
	}
	if owners := cluster.SlotOwners(t); owners[0] == 0 || owners[1] == 0 || owners[2] == 0 {
		t.Errorf("keys per node %v: not spread over the cluster", owners)
	}
}
