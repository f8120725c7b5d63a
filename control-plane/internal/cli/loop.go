package cli

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/detect"
	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/control-plane/xds"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/devca"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/runner"
	"github.com/meshward/meshward/replay/source"
)

// The control-plane loop of `meshward run`: the traffic goes through the
// compiled filter as it would in a mesh. A control plane starts in process
// (on the given Redis, else on an embedded Redis-protocol server: one code
// path, go-redis either way); the learning part of the traffic runs through
// the filter in learn mode, which ships its records to the collector; the
// trainer learns from what the collector stored and publishes the model;
// each workload's emulated sidecar subscribes over ADS and receives the
// model in its filter configuration; the rest of the traffic runs through
// the filter so configured (monitor), which ships its verdicts too; the
// incidents are recorded in the store.
//
// The sidecars authenticate as they would in a mesh: a throwaway CA
// (internal/devca) issues each workload's sidecar a client certificate
// with its SPIFFE ID; the collector and ADS listen on loopback with mTLS,
// take the sender's identity from that certificate and accept only records
// about, and configuration for, its own workload. Nothing is disabled for
// the run.

// runPrefix starts the keys of meshward run.
const runPrefix = "meshward-run"

// collectorCluster is the collector's Envoy cluster in the filters'
// configuration; the emulated sidecars forward its calls to the collector.
const collectorCluster = "meshward-collector"

// loop is a control plane started for one run.
type loop struct {
	srv      *server.Server
	release  *store.Release // the model trained: its sections
	sidecars *runner.Sidecars
	ca       *devca.CA
	binding  identity.Binding
	started  time.Time
	summary  loopSummary
	// valueKey is the run's value key (the filters' value_key).
	valueKey string
}

// loopSummary is the control plane's part of the run's report.
type loopSummary struct {
	Redis          string          `json:"redis"`
	LearnRequests  int             `json:"learn_requests"`
	Batches        map[int]int     `json:"batches_by_status"`
	RecordsDropped uint64          `json:"records_dropped"`
	Training       any             `json:"training"`
	ModelSHA256    string          `json:"model_sha256"`
	ModelBytes     int             `json:"model_bytes"`
	Sections       int             `json:"sections"`
	LargestSection int             `json:"largest_section_bytes"`
	Sidecars       int             `json:"sidecars"`
	Verdicts       *store.Verdicts `json:"verdicts_collected,omitempty"`
	Incidents      int             `json:"incidents_stored"`
}

// startLoop starts the control plane and loads the filter. workloads are
// those the run's sidecars serve: each is given an identity.
func startLoop(ctx context.Context, redisAddr string, wf wasmFlags, seed uint64, enf *runner.Enforce, workloads []string, stderr io.Writer) (*loop, error) {
	profile, err := wf.hostProfile()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(wf.path)
	if err != nil {
		return nil, err
	}
	l := &loop{started: time.Now(), binding: identity.Binding{TrustDomain: identity.DefaultTrustDomain, Workloads: map[string]string{}}}
	// A workload named <name>.<namespace> is its service account's (the
	// default binding); any other name gets an identity of its own.
	used := map[string]bool{}
	for _, w := range workloads {
		if _, ok := l.binding.Identity(w); !ok {
			l.binding.Workloads[w] = identity.SPIFFE(identity.DefaultTrustDomain, "meshward-run", serviceAccountName(w, used))
		}
	}
	if l.ca, err = devca.New("meshward run"); err != nil {
		return nil, err
	}
	leaf, err := l.ca.Server("", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	mtls := &tls.Config{Certificates: []tls.Certificate{leaf.Cert}, ClientCAs: l.ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	admin := make([]byte, 32)
	if _, err := rand.Read(admin); err != nil {
		return nil, err
	}
	cfg := server.DefaultConfig()
	cfg.Redis = redisAddr
	cfg.CollectorAddr, cfg.AdminAddr, cfg.XDSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Collector.Identity, cfg.CollectorTLS, cfg.Collector.Binding = collector.ModeTLS, mtls, l.binding
	cfg.XDS.Identity, cfg.XDS.TLS, cfg.XDS.Binding = xds.IdentityTLS, mtls, l.binding
	// Nobody calls the run's admin API; it is locked all the same.
	cfg.Auth.Token = []byte(hex.EncodeToString(admin))
	cfg.TrainEvery = 0
	cfg.Trainer.Train.Seed = seed
	// One model, rolled out to every sidecar at once: there is no stable
	// model to compare a canary with.
	cfg.Rollout.Canary = false
	cfg.Store.Window = time.Second
	// A run's keys live apart from a control plane's on the same Redis,
	// and each run starts from none (see below).
	cfg.Store.Prefix = runPrefix
	cfg.XDS.WasmURI = abs
	// A value key of the run's own, as a mesh has one (serve
	// -value-key-file): records carry digests of short values.
	vk := make([]byte, models.ValueKeyBytes)
	if _, err := rand.Read(vk); err != nil {
		return nil, err
	}
	l.valueKey = hex.EncodeToString(vk)
	cfg.XDS.Base = pluginconfig.Config{Mode: pluginconfig.ModeMonitor, CollectorCluster: collectorCluster, ValueKey: l.valueKey,
		// The replay reads each verdict back from the response.
		ResponseScore: true}
	if enf != nil {
		// The filters deny as enforce mode does; the run reads each 403.
		cfg.XDS.Base.Mode, cfg.XDS.Base.DenyReasons = pluginconfig.ModeEnforce, enf.DenyReasons
	}
	if redisAddr != "" {
		if err := clearRun(ctx, redisAddr, cfg.Store); err != nil {
			return nil, fmt.Errorf("clearing the keys of an earlier run (%s:*) on %s: %w", runPrefix, redisAddr, err)
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if l.srv, err = server.New(cfg, log); err != nil {
		return nil, err
	}
	if err := l.srv.Start(ctx); err != nil {
		return nil, err
	}
	if enf != nil && len(enf.Exceptions) > 0 {
		// The exceptions in force, served with the model as meshward
		// allow's are.
		if err := l.srv.PutExceptions(ctx, enf.Exceptions, "meshward run"); err != nil {
			l.Close()
			return nil, fmt.Errorf("-exceptions: %w", err)
		}
	}
	l.summary.Redis = redisAddr
	if redisAddr == "" {
		l.summary.Redis = "embedded"
	}
	if l.sidecars, err = runner.NewSidecars(abs, l.srv.CollectorURL, profile); err != nil {
		l.Close()
		return nil, fmt.Errorf("wasm runner: %w (build it with make wasm, or choose --runner native)", err)
	}
	// Each sidecar calls the collector with its workload's certificate, as
	// Envoy's collector cluster does with the certificate SDS gives it.
	l.sidecars.ClientTLS = l.clientTLS
	return l, nil
}

// clientTLS is a workload's sidecar's client configuration: its identity's
// certificate, trusting the run's CA.
func (l *loop) clientTLS(workload string) (*tls.Config, error) {
	id, ok := l.binding.Identity(workload)
	if !ok {
		return nil, fmt.Errorf("workload %q has no identity in this run", workload)
	}
	leaf, err := l.ca.Client(id)
	if err != nil {
		return nil, err
	}
	return l.ca.ClientTLS(leaf), nil
}

// serviceAccountName turns a workload name into a Kubernetes name, unique
// among those given out already.
func serviceAccountName(w string, used map[string]bool) string {
	b := []byte(strings.ToLower(w))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	name := strings.Trim(string(b[:min(len(b), 50)]), "-")
	if name == "" {
		name = "workload"
	}
	for i, base := 2, name; used[name]; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	used[name] = true
	return name
}

// clearRun deletes an earlier run's keys before the control plane starts
// (and would serve that run's model).
func clearRun(ctx context.Context, addr string, cfg store.Config) error {
	rdb := server.RedisClient(addr)
	defer rdb.Close()
	st, err := store.New(rdb, cfg)
	if err != nil {
		return err
	}
	return st.Clear(ctx)
}

// Close stops the control plane.
func (l *loop) Close() error {
	var errs []error
	if l.sidecars != nil {
		errs = append(errs, l.sidecars.Close())
	}
	return errors.Join(append(errs, l.srv.Close())...)
}

// byWorkload groups records by destination, workloads sorted.
func byWorkload(recs []*source.Record) ([]string, map[string][]int) {
	idx := map[string][]int{}
	for i, r := range recs {
		idx[r.Request.Destination] = append(idx[r.Request.Destination], i)
	}
	ws := make([]string, 0, len(idx))
	for w := range idx {
		ws = append(ws, w)
	}
	sort.Strings(ws)
	return ws, idx
}

func pick(recs []*source.Record, idx []int) []*source.Record {
	out := make([]*source.Record, len(idx))
	for j, i := range idx {
		out[j] = recs[i]
	}
	return out
}

// learn runs the learning traffic through the filter in learn mode (every
// request shipped, labelled attacks left out as the offline path does) and
// trains on what the collector stored.
func (l *loop) learn(ctx context.Context, recs []*source.Record) (*models.Model, error) {
	var normal []*source.Record
	unknown := 0
	for _, r := range recs {
		if !r.IsAttack() {
			normal = append(normal, r)
			if r.Request.Source == models.UnknownSource {
				unknown++
			}
		}
	}
	l.summary.LearnRequests = len(normal)
	all := 1.0
	ws, idx := byWorkload(normal)
	for _, w := range ws {
		doc, err := (&pluginconfig.Config{Mode: pluginconfig.ModeLearn, Workload: w, CollectorCluster: collectorCluster,
			SampleRate: &all, ValueKey: l.valueKey}).Encode()
		if err != nil {
			return nil, err
		}
		if _, err := l.sidecars.Run(w, doc, pick(normal, idx[w])); err != nil {
			return nil, err
		}
	}
	rep, err := l.srv.Train(ctx)
	l.summary.Training = rep
	if err != nil {
		hint := "--offline trains in process, without the control plane's minimum"
		if unknown > 0 {
			// The collector never stores an unidentified caller's request
			// for training (it could be anyone's).
			hint = fmt.Sprintf("%d of the %d learning requests have no source, and the control plane never learns from an unidentified caller: name their caller with -src; %s",
				unknown, len(normal), hint)
		}
		return nil, fmt.Errorf("training on what the collector stored: %w (%s)", err, hint)
	}
	if !rep.Published {
		return nil, fmt.Errorf("the trained model did not pass the control plane's gate: %s (--offline skips the gate)", rep.Rejected)
	}
	rel, err := l.srv.Store().Release(ctx, rep.SHA256)
	if err != nil {
		return nil, err
	}
	m, err := l.srv.Store().LoadModel(ctx, rep.SHA256)
	if err != nil {
		return nil, err
	}
	l.release = rel
	l.summary.ModelSHA256, l.summary.ModelBytes, l.summary.Sections, l.summary.LargestSection = rep.SHA256, rel.Bytes, len(rel.Sections), rel.Largest
	return m, nil
}

// adsTimeout bounds the wait for a sidecar's configuration.
const adsTimeout = 10 * time.Second

// monitor subscribes each workload's sidecar over ADS, checks that it
// receives the model just trained, and runs the workload's traffic through
// the filter so configured. Results are in the order of recs.
func (l *loop) monitor(recs []*source.Record) ([]runner.Result, error) {
	out := make([]runner.Result, len(recs))
	ws, idx := byWorkload(recs)
	for _, w := range ws {
		doc, err := l.subscribe(w)
		if err != nil {
			return nil, err
		}
		res, err := l.sidecars.Run(w, doc, pick(recs, idx[w]))
		if err != nil {
			return nil, err
		}
		for j, i := range idx[w] {
			out[i] = res[j]
		}
		l.summary.Sidecars++
	}
	l.summary.Batches, l.summary.RecordsDropped = l.sidecars.Batches, l.sidecars.Dropped
	return out, nil
}

// subscribe receives a workload's filter configuration over ADS, as its
// Envoy would, and ACKs it once the filter would accept it.
func (l *loop) subscribe(workload string) ([]byte, error) {
	tc, err := l.clientTLS(workload)
	if err != nil {
		return nil, err
	}
	id, _ := l.binding.Identity(workload)
	c, err := xds.DialTLS(l.srv.ADSAddr, xds.Node(id+"/"+workload+"-sidecar", workload, ""), tc)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	type got struct {
		u   *xds.Update
		err error
	}
	ch := make(chan got, 1)
	go func() { u, err := c.Recv(); ch <- got{u, err} }()
	var g got
	select {
	case g = <-ch:
	case <-time.After(adsTimeout):
		return nil, fmt.Errorf("sidecar of %s: no configuration over ADS within %v", workload, adsTimeout)
	}
	if g.err != nil {
		return nil, fmt.Errorf("sidecar of %s: ADS: %w", workload, g.err)
	}
	s, err := pluginconfig.Parse(g.u.PluginConfig, "")
	if _, want := l.release.SectionFor(workload); err == nil && (s.Model == nil || s.Model.SHA256() != want) {
		err = fmt.Errorf("section %s, want the workload's section of the model trained (%s)", g.u.Version, want)
	}
	if err != nil {
		_ = c.NACK(g.u, "", err)
		return nil, fmt.Errorf("sidecar of %s: refused what xDS sent: %w", workload, err)
	}
	return g.u.PluginConfig, c.ACK(g.u)
}

// record stores the run's incidents and reads back what the collector
// counted of the model's verdicts.
func (l *loop) record(ctx context.Context, incidents []*detect.Incident) error {
	st := l.srv.Store()
	for _, inc := range incidents {
		if err := st.PutIncident(ctx, inc); err != nil {
			return err
		}
	}
	stored, err := st.Incidents(ctx, 1000)
	if err != nil {
		return err
	}
	l.summary.Incidents = len(stored)
	v, err := st.Verdicts(ctx, l.started, time.Now())
	if err != nil {
		return err
	}
	if c, ok := v[store.VerdictsAll]; ok {
		l.summary.Verdicts = &c
	}
	return nil
}

// writeSummary prints the control plane's part of the summary.
func (s *loopSummary) writeSummary(w io.Writer) {
	fmt.Fprintf(w, "control plane (Redis: %s): %d learning requests shipped through the filter in learn mode; collector batches by status %v, %d records dropped\n",
		s.Redis, s.LearnRequests, s.Batches, s.RecordsDropped)
	fmt.Fprintf(w, "  model %.12s (%d sections, %d bytes, the largest %d) trained from the collected samples, rolled out over xDS to %d sidecars, each its own section\n",
		s.ModelSHA256, s.Sections, s.ModelBytes, s.LargestSection, s.Sidecars)
	if s.Verdicts != nil {
		fmt.Fprintf(w, "  the filters' records say it flagged %d of about %.0f requests (unflagged ones are sampled); incidents stored: %d\n",
			s.Verdicts.Flagged, s.Verdicts.Requests, s.Incidents)
	}
}

// runLoop runs the learning traffic and the monitored traffic through the
// control plane; the caller closes the loop once it has recorded the
// incidents.
func runLoop(redisAddr string, wf wasmFlags, seed uint64, enf *runner.Enforce, learn, monitor []*source.Record, stderr io.Writer) (*loop, *models.Model, []runner.Result, error) {
	ctx := context.Background()
	ws, _ := byWorkload(append(append([]*source.Record{}, learn...), monitor...))
	l, err := startLoop(ctx, redisAddr, wf, seed, enf, ws, stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := l.learn(ctx, learn)
	if err != nil {
		l.Close()
		return nil, nil, nil, err
	}
	res, err := l.monitor(monitor)
	if err != nil {
		l.Close()
		return nil, nil, nil, err
	}
	return l, m, res, nil
}

// runOffline trains in process on the learning traffic and scores the rest
// with a runner: the loop without the control plane.
func runOffline(kind string, wf wasmFlags, seed uint64, enf *runner.Enforce, learn, monitor []*source.Record, stdout io.Writer) (*models.Model, string, []runner.Result, error) {
	cfg := models.DefaultTrainConfig()
	cfg.Seed = seed
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		return nil, "", nil, err
	}
	attacks := 0
	for _, r := range learn {
		attacks += learnNormal(tr, r)
	}
	m, err := tr.Model()
	if err != nil {
		return nil, "", nil, fmt.Errorf("learning from the first %d requests: %w", len(learn), err)
	}
	name, res, err := score(kind, wf, m, 0, liveFlags{}, enf, monitor)
	if err != nil {
		return nil, "", nil, err
	}
	learned, _, _, held := tr.Samples()
	fmt.Fprintf(stdout, "learn: %d requests (%d learned, %d held back for calibration, %d labelled attacks not learned) → model %.12s, %d bytes\n",
		len(learn), learned, held, attacks, m.SHA256(), m.Size())
	return m, name, res, nil
}
