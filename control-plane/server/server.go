// Package server is `meshward serve`: the control plane's long-running
// stages, started from one list. Today: the store (Redis, or an embedded
// Redis-protocol server when no address is given), the collector the
// filters ship to, and the admin endpoint (health, readiness, Prometheus
// metrics, a JSON API). Training, rollout over xDS and enforcement join the
// list as they are built.
package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/leader"
	"github.com/meshward/meshward/control-plane/rollout"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/control-plane/trainer"
	"github.com/meshward/meshward/control-plane/xds"
	"github.com/meshward/meshward/filter/pluginconfig"
)

// Config is everything serve takes. Defaults in DefaultConfig.
type Config struct {
	// Redis is the Redis address; several, comma-separated, are the seed
	// nodes of a Redis Cluster; empty starts an embedded server in process
	// (one code path: go-redis either way).
	Redis string
	// CollectorAddr and AdminAddr are where the collector and the admin
	// endpoint listen.
	CollectorAddr, AdminAddr string
	// CollectorToken is the bearer token filters present.
	CollectorToken string
	Store          store.Config
	Collector      collector.Config
	Trainer        trainer.Config
	// TrainEvery is how often the trainer runs a round (0: only on demand,
	// POST /api/v1/train).
	TrainEvery time.Duration
	// XDSAddr is where ADS listens; XDS.WasmURI must be set for it to run.
	XDSAddr string
	XDS     xds.Config
	// Rollout decides canaries (package rollout); its CheckEvery is also
	// how often every replica makes what xDS serves match the store.
	Rollout rollout.Config
	// Kube, when set, elects the leader with the Kubernetes Lease
	// LeaseNamespace/LeaseName; without it the leader holds a lock in Redis.
	Kube                      *rest.Config
	LeaseNamespace, LeaseName string
	// WasmFile, when set, is a meshward.wasm the admin endpoint serves at
	// /wasm/meshward.wasm, for Envoys that fetch the module from the
	// control plane (XDS.WasmURI pointing there); XDS.WasmSHA256 defaults
	// to its sha256.
	WasmFile string
}

// DefaultConfig returns the defaults, in one place. Listeners bind to
// loopback unless told otherwise.
func DefaultConfig() Config {
	return Config{CollectorAddr: "127.0.0.1:9090", AdminAddr: "127.0.0.1:9091", Store: store.DefaultConfig(),
		Collector: collector.DefaultConfig(), Trainer: trainer.DefaultConfig(), TrainEvery: 10 * time.Minute,
		XDSAddr: "127.0.0.1:18000", XDS: xds.Config{Base: pluginconfig.Config{Mode: pluginconfig.ModeMonitor}},
		Rollout:        rollout.DefaultConfig(),
		LeaseNamespace: "default", LeaseName: "meshward-leader"}
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
	records   *prometheus.CounterVec
	listeners []net.Listener
	servers   []*http.Server
	rounds    *prometheus.CounterVec
	decisions *prometheus.CounterVec
	syncFails prometheus.Counter
	rollbacks prometheus.Counter
	// collectors is everything registered on /metrics (MetricLabels).
	collectors []prometheus.Collector
	trainMu    sync.Mutex
	syncMu     sync.Mutex
	xds        *xds.Server
	elector    leader.Leader
	election   string        // "kubernetes-lease" or "redis-lock"
	elected    chan struct{} // closed when the elector has given leadership up
	stop       context.CancelFunc
	// CollectorURL and AdminURL are where the servers listen, once
	// started; ADSAddr is where xDS does (empty when off).
	CollectorURL, AdminURL, ADSAddr string
}

// New prepares a server; Start runs it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	cfg.Collector.Token = cfg.CollectorToken
	if err := errors.Join(cfg.Store.Validate(), cfg.Collector.Validate(), cfg.Trainer.Validate(), cfg.Rollout.Validate()); err != nil {
		return nil, err
	}
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
	s.batches = prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricCollectorBatch, Help: "Batches received by the collector, by HTTP status."}, []string{"code"})
	s.records = prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricCollectorRecord, Help: "Records received by the collector, by outcome."}, []string{"outcome"})
	s.rounds = prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricTrainerRounds, Help: "Training rounds, by outcome (published, rejected, failed)."}, []string{"outcome"})
	s.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricCanaryDecisions, Help: "Canary decisions, by outcome (promoted, rolled_back)."}, []string{"outcome"})
	s.syncFails = prometheus.NewCounter(prometheus.CounterOpts{Name: MetricXDSSyncFailures, Help: "Times xDS could not read the rollout state from the store and kept serving its last snapshot."})
	s.rollbacks = prometheus.NewCounter(prometheus.CounterOpts{Name: MetricRollbacks, Help: "Model rollbacks done by this replica (POST /api/v1/rollback)."})
	s.collectors = []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.batches, s.records, s.rounds, s.decisions, s.syncFails, s.rollbacks, newState(s)}
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
	s.rdb = RedisClient(addr)
	st, err := store.New(s.rdb, s.cfg.Store)
	if err != nil {
		return err
	}
	s.store = st
	col, err := collector.New(s.cfg.Collector, st)
	if err != nil {
		return err
	}
	colURL, err := s.listen(s.cfg.CollectorAddr, s.countBatches(col))
	if err != nil {
		return err
	}
	adminURL, err := s.listen(s.cfg.AdminAddr, s.admin())
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
		// What the last run decided (model in force, canary) is in the
		// store: serve it again.
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
	tctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.elected = make(chan struct{})
	go func() { s.elector.Run(tctx); close(s.elected) }()
	if s.cfg.TrainEvery > 0 {
		go s.trainLoop(tctx)
	}
	go s.rolloutLoop(tctx)
	s.log.Info("meshward control plane serving", "collector", colURL, "admin", adminURL, "redis", addr, "election", s.election)
	return nil
}

// newElector picks the election: a Kubernetes Lease when the server reaches
// an API server, a lock in Redis otherwise.
func (s *Server) newElector(identity string) error {
	if s.cfg.Kube == nil {
		el, err := leader.New(s.rdb, leader.Config{Key: s.cfg.Store.Prefix + ":leader", Identity: identity, TTL: 15 * time.Second})
		if err != nil {
			return err
		}
		s.elector, s.election = el, "redis-lock"
		return nil
	}
	cs, err := kubernetes.NewForConfig(s.cfg.Kube)
	if err != nil {
		return fmt.Errorf("kubernetes client for the leader Lease: %w", err)
	}
	el, err := leader.NewLease(cs, leader.DefaultLeaseConfig(s.cfg.LeaseNamespace, s.cfg.LeaseName, identity))
	if err != nil {
		return err
	}
	s.elector, s.election = el, "kubernetes-lease"
	return nil
}

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

// trainLoop runs a training round every TrainEvery.
func (s *Server) trainLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.TrainEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.elector.Leading() {
				_, _ = s.train(ctx)
			}
		}
	}
}

// rolloutLoop judges the canary (on the leader) and makes what xDS serves
// match the store (on every replica), every Rollout.CheckEvery. While the
// store is unavailable nothing changes: xDS keeps its last good snapshot.
func (s *Server) rolloutLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Rollout.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.elector.Leading() && s.cfg.Trainer.Canary {
			d, err := rollout.Step(ctx, s.store, s.cfg.Rollout, time.Now())
			switch {
			case err != nil:
				s.log.Warn("judging the canary failed", "err", err)
			case d != nil:
				s.decisions.WithLabelValues(d.Outcome).Inc()
				s.log.Info("canary decided", "outcome", d.Outcome, "sha256", d.SHA256, "reason", d.Reason)
			}
		}
		if err := s.sync(ctx); err != nil && ctx.Err() == nil {
			s.syncFails.Inc()
			s.log.Debug("xDS keeps its last snapshot", "err", err)
		}
	}
}

// sync makes what xDS serves match the store: the model in force to every
// node, the canary (if one is under watch) to the canary share.
func (s *Server) sync(ctx context.Context) error {
	if s.xds == nil {
		return nil
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	sha, err := s.store.Current(ctx)
	if err != nil || sha == "" {
		return errors.Join(err, errors.New("no model in force"))
	}
	c, err := s.store.Canary(ctx)
	if err != nil {
		return err
	}
	csha := ""
	if c != nil {
		csha = c.SHA256
	}
	if sha == s.xds.Version() && csha == s.xds.CanaryVersion() {
		return nil // served already: no need to fetch the models
	}
	stable, err := s.store.Model(ctx, sha)
	if err != nil {
		return err
	}
	var canary []byte
	if c != nil {
		if canary, err = s.store.Model(ctx, c.SHA256); err != nil {
			return err
		}
	}
	return s.xds.Apply(stable, canary)
}

// train runs one round, one at a time, and logs and counts its outcome.
func (s *Server) train(ctx context.Context) (trainer.Report, error) {
	s.trainMu.Lock()
	defer s.trainMu.Unlock()
	rep, err := trainer.Round(ctx, s.store, s.cfg.Trainer, time.Now())
	switch {
	case err != nil:
		s.rounds.WithLabelValues("failed").Inc()
		s.log.Warn("training round failed", "err", err)
	case rep.Published:
		s.rounds.WithLabelValues("published").Inc()
		s.log.Info("model published", "sha256", rep.SHA256, "bytes", rep.Bytes, "learned", rep.Learned, "flagged_rate", rep.FlaggedRate, "canary", rep.Canary)
		if perr := s.sync(ctx); perr != nil {
			s.log.Error("rolling the model out over xDS failed", "err", perr)
		}
	default:
		s.rounds.WithLabelValues("rejected").Inc()
		s.log.Warn("candidate model rejected", "why", rep.Rejected, "sha256", rep.SHA256)
	}
	return rep, err
}

func (s *Server) listen(addr string, h http.Handler) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.listeners = append(s.listeners, l)
	s.servers = append(s.servers, srv)
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("server stopped", "addr", l.Addr().String(), "err", err)
		}
	}()
	return "http://" + l.Addr().String(), nil
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }

// countBatches wraps the collector to count batches and records.
func (s *Server) countBatches(col *collector.Collector) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/records", func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		col.ServeHTTP(rec, r)
		s.batches.WithLabelValues(strconv.Itoa(rec.code)).Inc()
	})
	return mux
}

// admin serves /healthz, /readyz, /metrics and the JSON API.
func (s *Server) admin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.rdb.Ping(ctx).Err(); err != nil {
			http.Error(w, "store unavailable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	if s.cfg.WasmFile != "" {
		mux.HandleFunc("GET /wasm/meshward.wasm", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/wasm")
			http.ServeFile(w, r, s.cfg.WasmFile)
		})
	}
	mux.HandleFunc("GET /api/v1/models/current", func(w http.ResponseWriter, r *http.Request) {
		// The encoded model in force, for `meshward model config` (the
		// WasmPlugin path of manifests/istio puts it in pluginConfig).
		sha, err := s.store.Current(r.Context())
		if err == nil && sha == "" {
			http.Error(w, "no model in force yet", http.StatusNotFound)
			return
		}
		var b []byte
		if err == nil {
			b, err = s.store.Model(r.Context(), sha)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Meshward-Model-Sha256", sha)
		_, _ = w.Write(b)
	})
	mux.HandleFunc("/api/v1/models", func(w http.ResponseWriter, r *http.Request) {
		shas, err := s.store.Models(r.Context())
		cur, cerr := s.store.Current(r.Context())
		s.json(w, map[string]any{"models": shas, "current": cur}, errors.Join(err, cerr))
	})
	mux.HandleFunc("POST /api/v1/train", func(w http.ResponseWriter, r *http.Request) {
		rep, err := s.train(r.Context())
		s.json(w, rep, err)
	})
	mux.HandleFunc("/api/v1/leader", func(w http.ResponseWriter, r *http.Request) {
		s.json(w, map[string]any{"leading": s.elector.Leading(), "election": s.election}, nil)
	})
	mux.HandleFunc("POST /api/v1/rollback", func(w http.ResponseWriter, r *http.Request) {
		sha, err := trainer.Rollback(r.Context(), s.store)
		if err == nil {
			s.rollbacks.Inc()
			err = s.sync(r.Context())
		}
		s.json(w, map[string]any{"current": sha}, err)
	})
	mux.HandleFunc("/api/v1/rollouts", func(w http.ResponseWriter, r *http.Request) {
		cur, err := s.store.Current(r.Context())
		can, cerr := s.store.Canary(r.Context())
		decs, derr := s.store.Decisions(r.Context(), 20)
		out := map[string]any{"current": cur, "canary": can, "decisions": decs}
		if s.xds == nil {
			out["xds"] = "off (no wasm URI)"
		} else {
			out["version"], out["canary_version"], out["nacks"] = s.xds.Version(), s.xds.CanaryVersion(), s.xds.NACKs()
		}
		s.json(w, out, errors.Join(err, cerr, derr))
	})
	mux.HandleFunc("/api/v1/incidents", func(w http.ResponseWriter, r *http.Request) {
		incs, err := s.store.Incidents(r.Context(), 100)
		s.json(w, map[string]any{"incidents": incs}, err)
	})
	mux.HandleFunc("/api/v1/edges", func(w http.ResponseWriter, r *http.Request) {
		dst := r.URL.Query().Get("destination")
		if dst == "" {
			http.Error(w, "destination= is required", http.StatusBadRequest)
			return
		}
		edges, err := s.store.Edges(r.Context(), dst, time.Now())
		s.json(w, map[string]any{"destination": dst, "edges": edges}, err)
	})
	return mux
}

func (s *Server) json(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(v)
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
