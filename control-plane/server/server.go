// Package server is `meshward serve`: the control plane's long-running
// stages. Start brings them up in order — the store (Redis, or an embedded
// Redis-protocol server when no address is given), the collector the
// filters ship to, the admin endpoint, xDS, the leader election, and the
// leader's loops (training, rollout, quarantines). The files split it by
// concern: admin.go (HTTP API), loops.go (training and rollout),
// quarantine.go (lateral movement), election.go, redis.go.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/control-plane/auth"
	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/detect"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/control-plane/exception"
	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/control-plane/leader"
	"github.com/meshward/meshward/control-plane/rollout"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/control-plane/trainer"
	"github.com/meshward/meshward/control-plane/wasmplugin"
	"github.com/meshward/meshward/control-plane/xds"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

// Config is everything serve takes. Defaults in DefaultConfig.
type Config struct {
	// Redis is the Redis address; several, comma-separated, are the seed
	// nodes of a Redis Cluster; empty starts an embedded server in process
	// (one code path: go-redis either way).
	Redis string
	// RedisAuth are Redis' credentials and TLS.
	RedisAuth RedisAuth
	// CollectorAddr and AdminAddr are where the collector and the admin
	// endpoint listen.
	CollectorAddr, AdminAddr string
	// CollectorTLS serves the collector over TLS; with Collector.Identity
	// tls it must verify client certificates (the sidecars' identities).
	CollectorTLS *tls.Config
	// AdminTLS, when set, serves the admin endpoint over TLS.
	AdminTLS *tls.Config
	// Auth authenticates and authorizes the admin API's callers (a token,
	// and TokenReview/SubjectAccessReview when Kube is set).
	Auth auth.Config
	// TrustDomain is the mesh's SPIFFE trust domain (service-account users
	// map to spiffe://<TrustDomain>/ns/NS/sa/SA; the default workload
	// binding).
	TrustDomain string
	Store       store.Config
	Collector   collector.Config
	Trainer     trainer.Config
	// TrainEvery is how often the trainer runs a round (0: only on demand,
	// POST /api/v1/train).
	TrainEvery time.Duration
	// XDSAddr is where ADS listens; XDS.WasmURI must be set for it to run.
	XDSAddr string
	XDS     xds.Config
	// Rollout decides canaries (package rollout); its CheckEvery is also
	// how often every replica makes what xDS serves match the store.
	Rollout rollout.Config
	// Quarantine, when set, is where lateral-movement decisions go (the
	// API server, or YAML files): every replica's collector passes its
	// records to the leader (a Redis stream), whose detector opens the
	// incidents and which alone applies, promotes and expires decisions.
	Quarantine enforce.Sink
	Detect     detect.Config
	Rules      decide.Rules
	// TickEvery is how often quarantines are promoted and expired.
	TickEvery time.Duration
	// RBACOverXDS delivers quarantines as Envoy RBAC over the control
	// plane's ADS (meshes without Istio) instead of a Quarantine sink; it
	// needs xDS (XDS.WasmURI).
	RBACOverXDS bool
	// Kube, when set, elects the leader with the Kubernetes Lease
	// LeaseNamespace/LeaseName; without it the leader holds a lock in Redis.
	Kube                      *rest.Config
	LeaseNamespace, LeaseName string
	// WasmFile, when set, is a meshward.wasm the admin endpoint serves at
	// /wasm/meshward.wasm, for Envoys that fetch the module from the
	// control plane (XDS.WasmURI pointing there); XDS.WasmSHA256 defaults
	// to its sha256.
	WasmFile string
	// WasmPlugin, when Name is set, is the Istio WasmPlugin the leader
	// keeps on the model in force (package wasmplugin; needs Kube).
	WasmPlugin wasmplugin.Config
	// MaxExceptions caps the exceptions stored (-max-exceptions).
	MaxExceptions int
}

// DefaultConfig returns the defaults, in one place. Listeners bind to
// loopback unless told otherwise.
func DefaultConfig() Config {
	return Config{CollectorAddr: "127.0.0.1:9090", AdminAddr: "127.0.0.1:9091", Store: store.DefaultConfig(), TrustDomain: identity.DefaultTrustDomain,
		Collector: collector.DefaultConfig(), Trainer: trainer.DefaultConfig(), TrainEvery: 10 * time.Minute,
		XDSAddr: "127.0.0.1:18000", XDS: xds.Config{Base: pluginconfig.Config{Mode: pluginconfig.ModeMonitor}},
		Rollout: rollout.DefaultConfig(),
		Detect:  detect.DefaultConfig(), Rules: decide.DefaultRules(), TickEvery: time.Second,
		LeaseNamespace: "default", LeaseName: "meshward-leader", MaxExceptions: exception.DefaultMax}
}

// Server is a running control plane.
type Server struct {
	cfg       Config
	log       *slog.Logger
	rdb       redis.UniversalClient
	embedded  *miniredis.Miniredis
	store     *store.Store
	reg       *prometheus.Registry
	batches   *prometheus.CounterVec
	collector *collector.Collector
	auth      *auth.Auth
	listeners []net.Listener
	servers   []*http.Server
	rounds    *prometheus.CounterVec
	capped    prometheus.Counter
	decisions *prometheus.CounterVec
	syncFails prometheus.Counter
	rollbacks prometheus.Counter
	// collectors is everything registered on /metrics.
	collectors []prometheus.Collector
	trainMu    sync.Mutex
	syncMu     sync.Mutex
	xds        *xds.Server
	wasm       *wasmplugin.Syncer
	elector    leader.Leader
	election   string        // "kubernetes-lease" or "redis-lock"
	elected    chan struct{} // closed when the elector has given leadership up
	loop       atomic.Pointer[enforce.Loop]
	detectSHA  atomic.Value // string: the model the loop detects on
	// termMu guards rebuilt: the leadership term whose quarantine state
	// was rebuilt (a replica acts only in a term it rebuilt for).
	termMu  sync.Mutex
	rebuilt uint64
	// day is the exceptions, readiness and preview's state (daytwo.go).
	day  dayTwo
	stop context.CancelFunc
	// CollectorURL and AdminURL are where the servers listen, once
	// started; ADSAddr is where xDS does (empty when off).
	CollectorURL, AdminURL, ADSAddr string

	// clock and expireEvery drive the embedded server's TTLs
	// (expireEmbedded); nil and 0 mean time.Now and a second.
	clock       func() time.Time
	expireEvery time.Duration
}

// New prepares a server; Start runs it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = identity.DefaultTrustDomain
	}
	cfg.Collector.Binding.TrustDomain, cfg.XDS.Binding.TrustDomain, cfg.Auth.TrustDomain = cfg.TrustDomain, cfg.TrustDomain, cfg.TrustDomain
	if cfg.XDS.Binding.Workloads == nil {
		cfg.XDS.Binding.Workloads = cfg.Collector.Binding.Workloads
	}
	if cfg.Auth.Kube == nil && cfg.Kube != nil {
		kc, err := kubernetes.NewForConfig(cfg.Kube)
		if err != nil {
			return nil, err
		}
		cfg.Auth.Kube = kc
	}
	var errs []error
	// The value key the filters digest short values with (value_key,
	// -value-key-file): the trainer learns the digests made with it, and
	// only those.
	cfg.Trainer.Train.ValueKeyID = 0
	if cfg.XDS.Base.ValueKey != "" {
		k, err := models.ParseValueKey(cfg.XDS.Base.ValueKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("-value-key-file: %w", err))
		}
		cfg.Trainer.Train.ValueKeyID = k.ID()
	}
	if cfg.Collector.Identity == collector.ModeTLS && (cfg.CollectorTLS == nil || cfg.CollectorTLS.ClientAuth != tls.RequireAndVerifyClientCert) {
		errs = append(errs, errors.New("-collector-identity=tls needs -collector-cert, -collector-key and -collector-client-ca: the sidecars present their mesh certificates (or -collector-identity=xfcc behind an Istio sidecar; -collector-identity=token for local development)"))
	}
	if cfg.Store.BatchTTL < 2*cfg.Collector.MaxSkew {
		errs = append(errs, fmt.Errorf("the store keeps batch keys %v, less than twice -collector-max-skew (%v): a late retry could count twice", cfg.Store.BatchTTL, cfg.Collector.MaxSkew))
	}
	if cfg.XDS.WasmURI != "" {
		errs = append(errs, cfg.XDS.Validate())
	}
	if err := errors.Join(append(errs, cfg.Store.Validate(), cfg.Collector.Validate(), cfg.Auth.Validate(), cfg.RedisAuth.validate(), cfg.Trainer.Validate(), cfg.Rollout.Validate(), cfg.Detect.Validate(), cfg.Rules.Validate())...); err != nil {
		return nil, err
	}
	if cfg.MaxExceptions < 1 || cfg.MaxExceptions > pluginconfig.MaxExceptions {
		return nil, fmt.Errorf("-max-exceptions %d: want 1 to %d (what one filter configuration carries)", cfg.MaxExceptions, pluginconfig.MaxExceptions)
	}
	if cfg.RBACOverXDS && (cfg.XDS.WasmURI == "" || cfg.Quarantine != nil) {
		return nil, errors.New("-xds-rbac needs xDS on (-wasm-uri) and no other quarantine sink (-policy-dir, an API server)")
	}
	cfg.XDS.RBAC = cfg.RBACOverXDS
	if cfg.WasmFile != "" {
		b, err := os.ReadFile(cfg.WasmFile)
		if err != nil {
			return nil, fmt.Errorf("wasm file: %w", err)
		}
		if cfg.XDS.WasmSHA256 == "" && strings.Contains(cfg.XDS.WasmURI, "://") {
			sum := sha256.Sum256(b)
			cfg.XDS.WasmSHA256 = hex.EncodeToString(sum[:])
		}
	}
	s := &Server{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	var err error
	if s.auth, err = auth.New(cfg.Auth); err != nil {
		return nil, err
	}
	if s.collector, err = collector.New(cfg.Collector, tee{s}); err != nil {
		return nil, err
	}
	s.batches, s.rounds, s.decisions = defCollectorBatch.CounterVec(), defTrainerRounds.CounterVec(), defCanaryDecisions.CounterVec()
	s.syncFails, s.rollbacks, s.capped = defXDSSyncFailures.Counter(), defRollbacks.Counter(), defTrainerCapped.Counter()
	// Every outcome is exported from the start, at 0: increase() and the
	// alerts on it see the first one (a series that appears at 1 has not
	// increased).
	for _, o := range []string{"published", "rejected", "failed"} {
		s.rounds.WithLabelValues(o)
	}
	for _, o := range []string{store.Promoted, store.RolledBack} {
		s.decisions.WithLabelValues(o)
	}
	s.collectors = []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.batches, s.rounds, s.capped, s.decisions, s.syncFails, s.rollbacks, newState(s)}
	s.collectors = append(s.collectors, s.collector.Collectors()...)
	s.collectors = append(s.collectors, s.newDayTwo()...)
	s.reg.MustRegister(s.collectors...)
	return s, nil
}

// Start starts every stage in order — the store first (the collector needs
// it), then the collector, then the admin endpoint (readiness reports on
// the others) — and returns once all listen.
func (s *Server) Start(ctx context.Context) error {
	addr := s.cfg.Redis
	if addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return fmt.Errorf("embedded Redis: %w", err)
		}
		s.embedded, addr = mr, mr.Addr()
		s.log.Info("no Redis address given: started an embedded Redis-protocol server", "addr", addr)
	}
	s.rdb = RedisClientWith(addr, s.cfg.RedisAuth)
	if err := s.checkRedis(ctx, addr); err != nil {
		s.rdb.Close()
		return err
	}
	st, err := store.New(s.rdb, s.cfg.Store)
	if err != nil {
		return err
	}
	s.store = st
	// The collector bounds each admitted batch's read itself; the server's
	// ReadTimeout is the backstop should that deadline not reach the
	// connection.
	colURL, err := s.listen(s.cfg.CollectorAddr, s.countBatches(s.collector), s.cfg.CollectorTLS, 10*time.Second+s.cfg.Collector.ReadTimeout)
	if err != nil {
		return err
	}
	adminURL, err := s.listen(s.cfg.AdminAddr, s.admin(), s.cfg.AdminTLS, 0)
	if err != nil {
		return err
	}
	s.CollectorURL, s.AdminURL = colURL, adminURL
	s.cfg.Trainer.Canary = s.cfg.Rollout.Canary && s.cfg.XDS.WasmURI != ""
	// xDS next: it serves the model in force, if any, and every new one.
	if s.cfg.XDS.WasmURI != "" {
		x, err := xds.New(s.cfg.XDS)
		if err != nil {
			return err
		}
		if err := x.Start(context.Background(), s.cfg.XDSAddr); err != nil {
			return err
		}
		s.xds, s.ADSAddr = x, x.Addr
		if s.cfg.RBACOverXDS {
			// Envoy keeps no state meshward could list: the standing
			// quarantines are kept in the store and published again
			// from there (after a restart, and by replicas that do not
			// lead).
			r := enforce.NewRBAC(x, s.cfg.Rules, s.log)
			r.Keep(enforce.StoreKeeper{Store: s.store})
			if err := r.Sync(ctx); err != nil {
				s.log.Warn("kept quarantines not read yet", "err", err)
			}
			s.cfg.Quarantine = r
		}
		// What the last run decided (model in force, canary, exceptions,
		// readiness) is in the store: serve it again.
		if _, err := s.reloadExceptions(ctx, true); err != nil {
			s.log.Warn("exceptions not read yet", "err", err)
		}
		if err := s.reloadReadiness(ctx); err != nil {
			s.log.Warn("readiness not read yet", "err", err)
		}
		if err := s.sync(ctx); err != nil {
			s.log.Info("nothing to serve yet", "err", err)
		}
		s.log.Info("serving ADS", "addr", x.Addr)
	}
	// The election and the trainer run last: they need the store. Only the
	// leader trains; every replica serves the collector and xDS.
	host, _ := os.Hostname()
	identity := host + "/" + strconv.Itoa(os.Getpid()) + "/" + colURL
	if err := s.newElector(identity); err != nil {
		return err
	}
	if f, ok := s.cfg.Quarantine.(enforce.Fenced); ok {
		// Every quarantine write asks the election first.
		f.SetFence(s.elector.Check)
	}
	if err := s.newWasmPlugin(identity); err != nil {
		return err
	}
	tctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.elected = make(chan struct{})
	if s.embedded != nil {
		go s.expireEmbedded(tctx)
	}
	go func() { s.elector.Run(tctx); close(s.elected) }()
	if s.cfg.TrainEvery > 0 {
		go s.trainLoop(tctx)
	}
	go s.rolloutLoop(tctx)
	go s.dayTwoLoop(tctx)
	if s.cfg.Quarantine != nil {
		go s.tickLoop(tctx)
		go s.followLoop(tctx)
	}
	s.log.Info("meshward control plane serving", "collector", colURL, "admin", adminURL, "redis", addr, "election", s.election)
	return nil
}

func (s *Server) listen(addr string, h http.Handler, tc *tls.Config, readTimeout time.Duration) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	scheme := "http://"
	if tc != nil {
		l, scheme = tls.NewListener(l, tc), "https://"
	}
	// Header reads are bounded here; each admitted batch's body by the
	// collector's own read deadline.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: readTimeout, MaxHeaderBytes: 64 << 10, IdleTimeout: 2 * time.Minute}
	s.listeners = append(s.listeners, l)
	s.servers = append(s.servers, srv)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("server stopped", "addr", l.Addr().String(), "err", err)
		}
	}()
	return scheme + l.Addr().String(), nil
}

// Store is the control plane's store (for `meshward run`, which records
// the incidents of its replay in it).
func (s *Server) Store() *store.Store { return s.store }

// Train runs a training round now (as POST /api/v1/train does).
func (s *Server) Train(ctx context.Context) (trainer.Report, error) { return s.train(ctx) }

// Close stops the stages in the reverse order.
func (s *Server) Close() error {
	if s.stop != nil {
		s.stop()
		// Leadership is given up (the lock or Lease released) before the
		// clients it needs close, so another replica takes over at once.
		select {
		case <-s.elected:
		case <-time.After(15 * time.Second):
			s.log.Warn("the leader election did not stop within 15 s")
		}
	}
	if s.xds != nil {
		s.xds.Close()
	}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := len(s.servers) - 1; i >= 0; i-- {
		errs = append(errs, s.servers[i].Shutdown(ctx))
	}
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.embedded != nil {
		s.embedded.Close()
	}
	return errors.Join(errs...)
}
