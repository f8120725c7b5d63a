// Package redistest starts real Redis for tests on free loopback ports: a
// single redis-server (optionally persisting to a temporary directory, so
// it can be stopped and restarted with its data), or a three-node Redis
// Cluster; either optionally locked as production should be (an ACL user
// with a password, the default user off; TLS only, client certificates
// required). Servers stop when the test ends.
package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshward/meshward/internal/devca"
)

// Server is a running redis-server.
type Server struct {
	Addr string
	opts Options
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	t    testing.TB
}

// Options change how a server starts.
type Options struct {
	// Persist writes every change to an append-only file in a temporary
	// directory (fsync always), so Restart brings the data back.
	Persist bool
	// Args are more redis-server arguments.
	Args []string
	// Username and Password, when Password is set, make an ACL user
	// (Username, default "meshward") the server's only user: the default
	// user is off, so a client without these credentials gets NOAUTH.
	Username, Password string
	// Rules are the ACL user's rules (default: every key, channel and
	// command: ~* &* +@all).
	Rules []string
	// TLS, when set, serves TLS only: no plain-text port, and a client
	// certificate the CA issued is required.
	TLS *TLS
}

// TLS are a server's TLS files and the client side the harness (and
// Client) use.
type TLS struct {
	CertFile, KeyFile, CAFile string
	// Client trusts the CA and presents a client certificate.
	Client *tls.Config
	// ClientCertFile and ClientKeyFile are that client certificate (for
	// flags such as -redis-cert-file).
	ClientCertFile, ClientKeyFile string
}

// NewTLS makes a throwaway CA, a server certificate for loopback and a
// client certificate, as files in a temporary directory.
func NewTLS(t testing.TB) *TLS {
	t.Helper()
	dir := t.TempDir()
	ca, err := devca.New("redistest")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server("", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("spiffe://cluster.local/ns/meshward-system/sa/meshward")
	if err != nil {
		t.Fatal(err)
	}
	out := &TLS{Client: ca.ClientTLS(client)}
	if out.CAFile, err = ca.WriteFile(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	if out.CertFile, out.KeyFile, err = server.WriteFiles(dir, "server"); err != nil {
		t.Fatal(err)
	}
	if out.ClientCertFile, out.ClientKeyFile, err = client.WriteFiles(dir, "client"); err != nil {
		t.Fatal(err)
	}
	return out
}

// user is the ACL user's name.
func (o Options) user() string {
	if o.Username == "" {
		return "meshward"
	}
	return o.Username
}

// serverArgs are the arguments that lock the server as the options say.
func (o Options) serverArgs(port int) []string {
	var args []string
	if o.TLS != nil {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(port), "--tls-cert-file", o.TLS.CertFile, "--tls-key-file", o.TLS.KeyFile,
			"--tls-ca-cert-file", o.TLS.CAFile, "--tls-auth-clients", "yes",
			// Nodes of a cluster connect to each other as clients.
			"--tls-client-cert-file", o.TLS.ClientCertFile, "--tls-client-key-file", o.TLS.ClientKeyFile)
	} else {
		args = append(args, "--port", strconv.Itoa(port))
	}
	if o.Password != "" {
		rules := o.Rules
		if len(rules) == 0 {
			rules = []string{"~*", "&*", "+@all"}
		}
		args = append(append(append(args, "--user", o.user(), "on", ">"+o.Password), rules...), "--user", "default", "off")
	}
	return args
}

// options are the client options of a server started with o.
func (o Options) options(addr string) *redis.Options {
	ro := &redis.Options{Addr: addr}
	if o.Password != "" {
		ro.Username, ro.Password = o.user(), o.Password
	}
	if o.TLS != nil {
		ro.TLSConfig = o.TLS.Client.Clone()
	}
	return ro
}

// Start starts redis-server (installed by make test's setup; see the
// Makefile) and waits until it answers PING. A missing binary fails the
// test: Redis behaviour is never faked.
func Start(t testing.TB) *Server { return StartWith(t, Options{}) }

// StartWith starts redis-server with options.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	port := freePort(t)
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), t: t, opts: o}
	s.args = append(o.serverArgs(port), "--bind", "127.0.0.1", "--save", "", "--protected-mode", "yes", "--loglevel", "warning",
		"--dir", t.TempDir())
	if o.Persist {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		s.args = append(s.args, "--appendonly", "no")
	}
	s.args = append(s.args, o.Args...)
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.t.Fatalf("redis-server is not installed (make test installs it: apt-get install redis-server): %v", err)
	}
	cmd := exec.Command(bin, s.args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	waitPing(s.t, s.opts.options(s.Addr))
}

// waitPing polls until the server answers: readiness, not a fixed sleep.
func waitPing(t testing.TB, o *redis.Options) {
	t.Helper()
	addr := o.Addr
	c := redis.NewClient(o)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if err := c.Ping(ctx).Err(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("redis-server on %s did not answer PING within 10 s", addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills the server (idempotent); Restart starts it again.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil && s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Kill()
		_, _ = s.cmd.Process.Wait()
	}
}

// Restart starts a stopped server again on the same port (with its data
// when it persists).
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Client returns a client of the server (with its credentials and TLS),
// closed with the test.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(s.opts.options(s.Addr))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Cluster is a running Redis Cluster of three masters (no replicas), each
// on its own loopback port, every slot assigned.
type Cluster struct {
	Addrs []string
	nodes []*Server
	opts  Options
}

// StartCluster starts three redis-server --cluster-enabled yes, joins them
// with redis-cli --cluster create, and waits until every node reports
// cluster_state:ok.
func StartCluster(t testing.TB) *Cluster { return StartClusterWith(t, Options{}) }

// StartClusterWith starts a cluster whose nodes are locked as o says (ACL
// user, TLS on clients and the cluster bus); o.Persist and o.Args apply to
// every node.
func StartClusterWith(t testing.TB, o Options) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli is not installed (make test installs it: apt-get install redis-tools): %v", err)
	}
	c := &Cluster{opts: o}
	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		no := o
		// The cluster bus gets its own free port: port+10000 may not exist.
		no.Args = append([]string{"--cluster-enabled", "yes", "--cluster-config-file", dir + "/nodes.conf",
			"--cluster-port", strconv.Itoa(freePort(t)), "--cluster-node-timeout", "5000"}, o.Args...)
		if o.TLS != nil {
			no.Args = append(no.Args, "--tls-cluster", "yes", "--tls-replication", "yes")
		}
		n := StartWith(t, no)
		c.nodes = append(c.nodes, n)
		c.Addrs = append(c.Addrs, n.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if o.TLS != nil {
		args = append(args, "--tls", "--cacert", o.TLS.CAFile, "--cert", o.TLS.ClientCertFile, "--key", o.TLS.ClientKeyFile)
	}
	if o.Password != "" {
		args = append(args, "--user", o.user(), "--pass", o.Password, "--no-auth-warning")
	}
	// redis-cli waits for the nodes to join without a limit of its own.
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	if out, err := exec.CommandContext(cctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, addr := range c.Addrs {
		rc := redis.NewClient(o.options(addr))
		for {
			info, _ := rc.ClusterInfo(ctx).Result()
			if strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3") {
				break
			}
			if ctx.Err() != nil {
				rc.Close()
				t.Fatalf("cluster node %s not ready within 20 s:\n%s", addr, info)
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
		rc.Close()
	}
	return c
}

// Client returns a cluster client (with the nodes' credentials and TLS),
// closed with the test.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	o := c.opts.options("")
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// SlotOwners reports how many keys each node holds (after a test wrote
// some): proof that the keys spread over the cluster.
func (c *Cluster) SlotOwners(t testing.TB) []int64 {
	var out []int64
	for _, n := range c.nodes {
		rc := n.Client(t)
		k, err := rc.DBSize(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(fmt.Errorf("finding a free port: %w", err))
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
