package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/detect"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/control-plane/policy"
	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/report"
	"github.com/meshward/meshward/replay/runner"
	"github.com/meshward/meshward/replay/source"
)

// sourceFlags are the flags every command that reads traffic takes.
type sourceFlags struct {
	o          source.Overrides
	format     string
	identities string
	limits     source.Limits
}

func (f *sourceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.o.Src, "src", "", "set the source (principal or workload) of every request")
	fs.StringVar(&f.o.Dst, "dst", "", "set the destination workload of every request")
	fs.StringVar(&f.o.Label, "label", "", "set the label of every request (normal, or an attack label)")
	fs.StringVar(&f.format, "format", "auto", "traffic format: auto, "+strings.Join(source.Formats(), ", "))
	fs.StringVar(&f.identities, "identities", "", "address → workload map for captures (lines: ADDRESS NAME)")
	fs.IntVar(&f.limits.MaxEntryBytes, "max-entry-bytes", source.DefaultMaxEntryBytes,
		"skip (and report) a traffic file entry longer than this: a JSONL line, a HAR entry, a Jaeger JSON trace")
	fs.IntVar(&f.limits.MaxCaptureBytes, "max-capture-bytes", source.DefaultPcapMaxBufferedBytes,
		"a capture's TCP payload held while its connections are open, at most (beyond: the least recently active are read early)")
	fs.IntVar(&f.limits.MaxPendingBytes, "max-pending-bytes", source.DefaultPcapMaxPendingBytes,
		"a capture's requests held back for time order, at most (beyond: the oldest come out early, reported)")
}

func (f *sourceFlags) options() (source.FileOptions, error) {
	opt := source.FileOptions{Format: f.format, Overrides: f.o, Limits: f.limits}
	if f.identities != "" {
		ids, err := loadIdentities(f.identities)
		if err != nil {
			return opt, err
		}
		opt.Identities = ids
	}
	return opt, nil
}

// eachRecord reads every file, in order, calling fn for each good record;
// malformed entries are returned as problems and echoed (the first 20) to
// stderr.
func eachRecord(paths []string, sf *sourceFlags, stderr io.Writer, fn func(*source.Record) error) ([]source.Problem, error) {
	var problems []source.Problem
	emit := func(r *source.Record) error {
		if r.Request.Source == "" {
			r.Request.Source = source.DefaultSource
		}
		if r.Request.Destination == "" {
			r.Request.Destination = source.DefaultDestination
		}
		return fn(r)
	}
	bad := func(p source.Problem) {
		problems = append(problems, p)
		if len(problems) <= 20 {
			fmt.Fprintln(stderr, "skipped:", p)
		}
	}
	opt, err := sf.options()
	if err != nil {
		return nil, err
	}
	for _, path := range paths {
		if err := source.ReadFile(path, opt, emit, bad); err != nil {
			return nil, err
		}
	}
	if len(problems) > 20 {
		fmt.Fprintf(stderr, "skipped: … and %d more malformed entries (see the report)\n", len(problems)-20)
	}
	return problems, nil
}

// readTraffic reads every file into memory.
func readTraffic(paths []string, sf *sourceFlags, stderr io.Writer) ([]*source.Record, []source.Problem, error) {
	var recs []*source.Record
	problems, err := eachRecord(paths, sf, stderr, func(r *source.Record) error { recs = append(recs, r); return nil })
	return recs, problems, err
}

// outputFlags are where a replay writes its results.
type outputFlags struct {
	report, scores, html string
	top                  int
}

func (f *outputFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.report, "report", "", "write the JSON report (figures, top requests, skipped entries) to this file")
	fs.StringVar(&f.scores, "scores", "", "write one JSON line per request (position, score, verdict, label, reasons) to this file")
	fs.StringVar(&f.html, "html", "", "write a self-contained HTML report (ROC curve, score distributions, top requests) to this file")
	fs.IntVar(&f.top, "top", 20, "how many of the highest-scored requests the report lists")
}

// liveFlags configure the live runner.
type liveFlags struct {
	url         string
	speed       float64
	concurrency int
}

func (f *liveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "url", "", "for -runner live: the listener to send the requests to (an Envoy with the filter, response_score on)")
	fs.Float64Var(&f.speed, "speed", 0, "for -runner live: 1 keeps the original pacing, 10 is ten times faster, 0 sends as fast as allowed")
	fs.IntVar(&f.concurrency, "concurrency", 8, "for -runner live: requests in flight at most")
}

// wasmFlags say which compiled filter the wasm runners load, and on which
// host profile (how the host answers WASI calls: as Envoy's does, per
// version).
type wasmFlags struct {
	path    string
	profile string
}

func (f *wasmFlags) register(fs *flag.FlagSet, usage string) {
	fs.StringVar(&f.path, "wasm", defaultWasm, usage)
	fs.StringVar(&f.profile, "host-profile", string(wazerohost.DefaultProfile),
		"for the compiled filter: the Envoy host it runs on, answering WASI calls as that Envoy's Wasm host does ("+profileNames()+")")
}

func profileNames() string {
	names := make([]string, 0, len(wazerohost.Profiles)+1)
	for _, p := range wazerohost.Profiles {
		names = append(names, string(p))
	}
	return strings.Join(append(names, string(wazerohost.Wazero)), ", ")
}

func (f wasmFlags) hostProfile() (wazerohost.Profile, error) {
	p, err := wazerohost.ParseProfile(f.profile)
	if err != nil {
		return "", fmt.Errorf("%w: -host-profile: %v", ErrUsage, err)
	}
	return p, nil
}

func newRunner(kind string, wf wasmFlags, m *models.Model, threshold float64, live liveFlags, enf *runner.Enforce) (runner.Runner, error) {
	switch kind {
	case "live":
		if enf != nil {
			return nil, fmt.Errorf("%w: -mode enforce judges with -runner native or wasm; a live listener's filter decides by its own configuration", ErrUsage)
		}
		if live.url == "" {
			return nil, fmt.Errorf("%w: -runner live needs -url", ErrUsage)
		}
		if live.speed < 0 || live.concurrency < 1 {
			return nil, fmt.Errorf("%w: -speed must be ≥ 0 and -concurrency ≥ 1", ErrUsage)
		}
		return &runner.Live{URL: live.url, Speed: live.speed, Concurrency: live.concurrency}, nil
	case "native":
		return &runner.Native{Model: m, Threshold: threshold, Enforce: enf}, nil
	case "wasm":
		profile, err := wf.hostProfile()
		if err != nil {
			return nil, err
		}
		w, err := runner.NewWasm(wf.path, m, threshold, profile)
		if err != nil {
			return nil, fmt.Errorf("wasm runner: %w (build it with make wasm, or choose -runner native)", err)
		}
		w.Enforce = enf
		return w, nil
	}
	return nil, fmt.Errorf("%w: -runner %q: want native, wasm or live", ErrUsage, kind)
}

// score runs the records through a runner of the given kind and closes it.
func score(kind string, wf wasmFlags, m *models.Model, threshold float64, live liveFlags, enf *runner.Enforce, recs []*source.Record) (string, []runner.Result, error) {
	run, err := newRunner(kind, wf, m, threshold, live, enf)
	if err != nil {
		return "", nil, err
	}
	defer run.Close()
	res, err := run.Run(recs)
	return run.Name(), res, err
}

// defaultWasm is where make puts the compiled filter.
const defaultWasm = "build/meshward.wasm"

func replay(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("replay", stderr)
	modelPath := fs.String("model", "", "the model to score with (binary, base64, or plugin config JSON); required")
	kind := fs.String("runner", "native", "native (the models code in process), wasm (the compiled filter under the proxy-wasm host emulator) or live (a listener)")
	var wf wasmFlags
	wf.register(fs, "the compiled filter, for -runner wasm")
	threshold := fs.Float64("threshold", 0, "flag above this score (0: the model's threshold)")
	valueKeyFile := fs.String("value-key-file", "", "the mesh's value key (serve -value-key-file), for a model the control plane trained: its fields enumerated by value digests are then looked up, as the mesh's filters do (without it they are judged by shape)")
	var lf liveFlags
	lf.register(fs)
	var sf sourceFlags
	sf.register(fs)
	var of outputFlags
	of.register(fs)
	var ef enforceFlags
	ef.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	enf, err := ef.enforce()
	if err != nil {
		return err
	}
	if *modelPath == "" || fs.NArg() == 0 {
		return fmt.Errorf("%w: replay needs -model and at least one traffic file", ErrUsage)
	}
	if *threshold < 0 || *threshold > 1 {
		return fmt.Errorf("%w: -threshold %v is not in [0,1]", ErrUsage, *threshold)
	}
	m, err := loadModel(*modelPath)
	if err != nil {
		return err
	}
	if *valueKeyFile != "" {
		k, err := readValueKey(*valueKeyFile)
		if err != nil {
			return err
		}
		if n := m.SetValueKey(k); n > 0 {
			fmt.Fprintf(stderr, "warning: %d sections of the model enumerate value digests made with another key than -value-key-file's: those values are judged by their shapes\n", n)
		}
	}
	recs, problems, err := readTraffic(fs.Args(), &sf, stderr)
	if err != nil {
		return err
	}
	name, res, err := score(*kind, wf, m, *threshold, lf, enf, recs)
	if err != nil {
		return err
	}
	th := *threshold
	if th == 0 {
		th = m.Meta.Threshold
	}
	rep := report.New(name, m, th, fs.Args(), recs, res, problems, of.top)
	rep.WriteSummary(stdout)
	return writeOutputs(rep, recs, res, of)
}

func writeOutputs(rep *report.Report, recs []*source.Record, res []runner.Result, of outputFlags) error {
	if of.report != "" {
		if err := writeFile(of.report, rep.WriteJSON); err != nil {
			return err
		}
	}
	if of.scores != "" {
		if err := writeFile(of.scores, func(w io.Writer) error { return report.WriteScores(w, recs, res) }); err != nil {
			return err
		}
	}
	if of.html != "" {
		if err := writeFile(of.html, func(w io.Writer) error { return rep.WriteHTML(w, recs, res) }); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runTraffic is "meshward run --traffic": learn from the first part of the
// traffic, then replay the rest through the filter and report. With the
// compiled filter the loop goes through the control plane (loop.go):
// collector, Redis, trainer, rollout over xDS; --offline (or the native
// runner) trains in process and hands the model to the runner directly.
func runTraffic(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	var traffic multiFlag
	fs.Var(&traffic, "traffic", "a traffic file to run (repeatable; also given as arguments)")
	learnUntil := fs.String("learn-until", "50%", "learn from requests before this point: a share (50% or 0.5) or an RFC 3339 time")
	outDir := fs.String("out", "", "write report.json and scores.jsonl to this directory")
	kind := fs.String("runner", "auto", "wasm, native, or auto (wasm when the compiled filter exists)")
	var wf wasmFlags
	wf.register(fs, "the compiled filter")
	seed := fs.Uint64("seed", 1, "training seed")
	var kf kubeFlags
	kf.register(fs, "apply the quarantines to an API server instead of writing them as YAML")
	offline := fs.Bool("offline", false, "train in process and score without the control plane (the loop through collector, Redis and xDS is the default with the wasm runner)")
	redisAddr := fs.String("redis", "", "the control plane's Redis (host:port); empty starts an embedded Redis-protocol server")
	var sf sourceFlags
	sf.register(fs)
	var ef enforceFlags
	ef.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	enf, err := ef.enforce()
	if err != nil {
		return err
	}
	files := append([]string{}, traffic...)
	files = append(files, fs.Args()...)
	if len(files) == 0 {
		return fmt.Errorf("%w: run needs --traffic FILE (make run generates one)", ErrUsage)
	}
	recs, problems, err := readTraffic(files, &sf, stderr)
	if err != nil {
		return err
	}
	learn, monitor, err := splitLearn(recs, *learnUntil)
	if err != nil {
		return err
	}
	if *kind == "auto" {
		*kind = "native"
		if _, err := os.Stat(wf.path); err == nil {
			*kind = "wasm"
		}
	}
	var (
		m    *models.Model
		name string
		res  []runner.Result
		lp   *loop
	)
	if *kind == "wasm" && !*offline {
		if lp, m, res, err = runLoop(*redisAddr, wf, *seed, enf, learn, monitor, stderr); err != nil {
			return err
		}
		defer lp.Close()
		name = "wasm"
	} else if m, name, res, err = runOffline(*kind, wf, *seed, enf, learn, monitor, stdout); err != nil {
		return err
	}
	rep := report.New(name, m, m.Meta.Threshold, files, monitor, res, problems, 20)
	if lp != nil {
		// Assembled from the sections served: its version is the release's.
		rep.Model = lp.summary.ModelSHA256
	}
	standing, err := detectAndDecide(rep, m, monitor, res)
	if err != nil {
		return err
	}
	if lp != nil {
		if err := lp.record(context.Background(), rep.Incidents); err != nil {
			return err
		}
		rep.ControlPlane = &lp.summary
		lp.summary.writeSummary(stdout)
	}
	if *outDir != "" {
		if err := os.MkdirAll(*outDir, 0o755); err != nil {
			return err
		}
	}
	switch {
	case kf.set():
		if err := applyPolicies(rep, standing, &kf, stderr); err != nil {
			return err
		}
	case *outDir != "":
		if err := writePolicies(rep, standing, filepath.Join(*outDir, "policies")); err != nil {
			return err
		}
	}
	rep.WriteSummary(stdout)
	if *outDir == "" {
		return nil
	}
	return writeOutputs(rep, monitor, res, outputFlags{report: filepath.Join(*outDir, "report.json"), scores: filepath.Join(*outDir, "scores.jsonl"), html: filepath.Join(*outDir, "report.html")})
}

// detectAndDecide runs the monitored traffic, in order and on its own
// clock, through the control plane's lateral-movement loop (enforce.Loop:
// the detector, the guard rails, the decisions, held ones reconsidered as
// the limits free) into a sink that applies nothing. Decisions stay dry
// runs (the default rules never enforce). The report gets the incidents
// and every decision made, a standing one as it stands at the end (it grew
// with its incident); what stands is returned, for the files or the API
// server.
func detectAndDecide(rep *report.Report, m *models.Model, recs []*source.Record, res []runner.Result) ([]decide.Decision, error) {
	rules := decide.DefaultRules()
	sink := enforce.NewMemory(rules)
	loop, err := enforce.New(detect.DefaultConfig(), rules, m, sink, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	var ticked time.Time
	for i, r := range recs {
		if _, err := loop.Observe(ctx, detect.Observation{TS: r.TS, Request: &r.Request, Score: res[i].Score, Flagged: res[i].Flagged, Reasons: res[i].Reasons, Pos: r.Pos}); err != nil {
			return nil, err
		}
		// The loop's clock is the traffic's, ticked as often as
		// meshward serve ticks its own.
		if r.TS.Sub(ticked) >= server.DefaultConfig().TickEvery {
			if err := loop.Tick(ctx, r.TS); err != nil {
				return nil, err
			}
			ticked = r.TS
		}
	}
	rep.Incidents = loop.Incidents()
	standing := sink.Standing()
	now := map[string]decide.Decision{}
	for _, d := range standing {
		now[d.ID] = d
	}
	rep.Decisions = loop.Decisions()
	for i, d := range rep.Decisions {
		if s, ok := now[d.ID]; ok && d.Suppressed == "" {
			rep.Decisions[i] = s
		}
	}
	return standing, nil
}

// writePolicies writes the Istio AuthorizationPolicies of every standing
// decision as YAML files, one per decision.
func writePolicies(rep *report.Report, standing []decide.Decision, dir string) error {
	for _, dec := range standing {
		aps, err := policy.Istio(dec)
		if err != nil {
			rep.Policies = append(rep.Policies, "not written: "+err.Error())
			continue
		}
		if len(aps) == 0 {
			continue
		}
		b, err := policy.YAML(aps)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		path := filepath.Join(dir, dec.ID+".yaml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
		rep.Policies = append(rep.Policies, path)
		// The same decision as Envoy RBAC, for meshes without Istio.
		rbac, err := policy.RBAC(dec)
		if err != nil {
			return err
		}
		doc := map[string]json.RawMessage{}
		for w, f := range rbac {
			if doc[w], err = protojson.Marshal(f); err != nil {
				return err
			}
		}
		rb, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		rpath := filepath.Join(dir, dec.ID+".envoy-rbac.json")
		if err := os.WriteFile(rpath, rb, 0o644); err != nil {
			return err
		}
		rep.Policies = append(rep.Policies, rpath)
	}
	return nil
}

// applyPolicies applies every standing decision to the API server (dry
// runs: an offline replay never enforces), audited on stderr.
func applyPolicies(rep *report.Report, standing []decide.Decision, kf *kubeFlags, stderr io.Writer) error {
	a, err := kf.applier(decide.DefaultRules(), auditLog(stderr))
	if err != nil {
		return err
	}
	var errs []error
	for _, dec := range standing {
		if err := a.Apply(context.Background(), dec); err != nil {
			errs = append(errs, err)
			rep.Policies = append(rep.Policies, "not applied: "+err.Error())
			continue
		}
		if q, ok := a.Get(dec.ID); ok {
			for _, r := range q.Policies {
				rep.Policies = append(rep.Policies, "AuthorizationPolicy "+r.Namespace+"/"+r.Name)
			}
		}
	}
	return errors.Join(errs...)
}

// splitLearn splits records at a share ("50%", "0.5") or a time (RFC 3339:
// records before it learn; records without a time follow their position).
func splitLearn(recs []*source.Record, until string) (learn, monitor []*source.Record, err error) {
	if t, err := time.Parse(time.RFC3339Nano, until); err == nil {
		for _, r := range recs {
			if !r.TS.IsZero() && r.TS.Before(t) {
				learn = append(learn, r)
			} else {
				monitor = append(monitor, r)
			}
		}
		return learn, monitor, nil
	}
	share, err := strconv.ParseFloat(strings.TrimSuffix(until, "%"), 64)
	if err == nil && strings.HasSuffix(until, "%") {
		share /= 100
	}
	if err != nil || !(share > 0 && share < 1) {
		return nil, nil, fmt.Errorf("%w: --learn-until %q: want a share in (0,1) such as 50%% or 0.5, or an RFC 3339 time", ErrUsage, until)
	}
	n := int(share * float64(len(recs)))
	if n == 0 || n == len(recs) {
		return nil, nil, errors.New("--learn-until leaves nothing to learn from or nothing to monitor")
	}
	return recs[:n], recs[n:], nil
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
