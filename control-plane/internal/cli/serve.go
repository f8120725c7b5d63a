package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/control-plane/kube"
	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/control-plane/wasmplugin"
	"github.com/meshward/meshward/control-plane/xds"
	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// serveFlags are meshward serve's flags that are not fields of
// server.Config: register defines every flag of serve, onto both.
type serveFlags struct {
	sec                             securityFlags
	mode, policyDir, qns, protected *string
	denyReasons                     *string
	kubeconfig, leaseNS, wasmPlugin *string
	valueKeyFile                    *string
}

// register defines serve's flags on fs.
func (f *serveFlags) register(fs *flag.FlagSet, cfg *server.Config) {
	fs.StringVar(&cfg.Redis, "redis", "", "Redis address (host:port), or a Redis Cluster's seed nodes, comma-separated; empty starts an embedded Redis-protocol server")
	fs.StringVar(&cfg.CollectorAddr, "collector-addr", cfg.CollectorAddr, "where the collector listens")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", cfg.AdminAddr, "where health, metrics and the JSON API listen")
	f.sec.register(fs, cfg)
	fs.StringVar(&cfg.XDSAddr, "xds-addr", cfg.XDSAddr, "where ADS (the model rollout to Envoys) listens")
	fs.StringVar(&cfg.XDS.WasmURI, "wasm-uri", "", "where Envoys load meshward.wasm from (a local path, or a URL with -wasm-sha256); empty turns xDS off")
	fs.StringVar(&cfg.XDS.WasmSHA256, "wasm-sha256", "", "sha256 of the module at a remote -wasm-uri (default: that of -wasm-file)")
	fs.StringVar(&cfg.WasmFile, "wasm-file", "", "a meshward.wasm the admin endpoint serves at /wasm/meshward.wasm (point -wasm-uri there)")
	fs.BoolVar(&cfg.XDS.LearnFirst, "filter-learn-first", false, "before any model exists, serve connecting Envoys the filter in learn mode (it ships samples to -filter-collector-cluster); afterwards each workload learn, then monitor, until its readiness allows more (over xDS, and in its WasmPlugin under -wasmplugin)")
	f.mode = fs.String("filter-mode", string(cfg.XDS.Base.Mode), "the mode xDS gives the filters: learn, monitor or enforce")
	f.denyReasons = fs.String("filter-deny-reasons", "", "the reasons enforce mode denies a request for, comma-separated: reasons or the groups default, values, content, structure, size, none (empty: default — content and values, never structural novelty)")
	fs.IntVar(&cfg.MaxExceptions, "max-exceptions", cfg.MaxExceptions, "the most exceptions (meshward allow) stored at once")
	fs.StringVar(&cfg.XDS.Base.CollectorCluster, "filter-collector-cluster", "", "the Envoy cluster filters ship records to (empty: none)")
	f.valueKeyFile = fs.String("value-key-file", "", "a file holding the mesh's value key (32 hex digits: openssl rand -hex 16), given to the filters (value_key): their records carry keyed digests of short query and form values, and the models enumerate closed fields by them (empty: shapes only)")
	fs.DurationVar(&cfg.TrainEvery, "train-every", cfg.TrainEvery, "how often to retrain from the collected samples (0: only on demand, POST /api/v1/train)")
	fs.BoolVar(&cfg.Rollout.Canary, "canary", cfg.Rollout.Canary, "send a newly trained model to a share of the nodes first, promoted or rolled back on its flagged rate")
	fs.Float64Var(&cfg.XDS.CanaryShare, "canary-share", 0.1, "the share of each group's nodes that gets a canary")
	fs.Float64Var(&cfg.Rollout.MinRequests, "canary-min-requests", cfg.Rollout.MinRequests, "requests the canary and the stable model must each have scored before a decision")
	fs.Float64Var(&cfg.Rollout.MaxRatio, "canary-max-ratio", cfg.Rollout.MaxRatio, "the canary may flag up to this many times the stable model's rate ...")
	fs.Float64Var(&cfg.Rollout.MaxIncrease, "canary-max-increase", cfg.Rollout.MaxIncrease, "... or the stable rate plus this, whichever is higher")
	fs.DurationVar(&cfg.Rollout.Observe, "canary-observe", cfg.Rollout.Observe, "how long a canary is watched, at least, before promotion")
	fs.DurationVar(&cfg.Rollout.Timeout, "canary-timeout", cfg.Rollout.Timeout, "a canary that has not scored enough requests by then is rolled back")
	fs.DurationVar(&cfg.XDS.GroupTTL, "xds-group-ttl", xds.DefaultGroupTTL, "how long xDS keeps a node group no Envoy is connected for (metric meshward_xds_node_groups_evicted_total)")
	fs.IntVar(&cfg.XDS.MaxGroups, "xds-max-groups", xds.DefaultMaxGroups, "at most this many node groups kept by xDS: past it the idlest is forgotten, or a new one refused when all are connected")
	fs.BoolVar(&cfg.RBACOverXDS, "xds-rbac", false, "quarantines: deliver them as Envoy RBAC over ADS (meshes without Istio; listeners name the meshward-rbac ECDS resource)")
	f.policyDir = fs.String("policy-dir", "", "quarantines: write AuthorizationPolicy YAML files here (GitOps) instead of to an API server")
	fs.BoolVar(&cfg.Rules.Enforce, "enforce", false, "quarantines: promote dry runs to enforcement after -promote-after (default: dry runs only)")
	fs.DurationVar(&cfg.Rules.PromoteAfter, "promote-after", cfg.Rules.PromoteAfter, "quarantines: how long a dry run lasts before it is enforced (with -enforce)")
	fs.DurationVar(&cfg.Rules.TTL, "quarantine-ttl", cfg.Rules.TTL, "quarantines: how long one lasts unless released")
	fs.IntVar(&cfg.Rules.MaxActive, "max-quarantines", cfg.Rules.MaxActive, "quarantines: at most this many at once")
	fs.IntVar(&cfg.Rules.MaxActivePerNamespace, "max-quarantines-per-namespace", cfg.Rules.MaxActivePerNamespace, "quarantines: at most this many at once whose sources are in one namespace")
	fs.IntVar(&cfg.Rules.RateLimit, "decision-rate", cfg.Rules.RateLimit, "quarantines: at most this many new decisions per -decision-period (more wait until it frees)")
	fs.IntVar(&cfg.Rules.NamespaceRateLimit, "decision-rate-per-namespace", cfg.Rules.NamespaceRateLimit, "quarantines: at most this many new decisions per -decision-period about sources of one namespace")
	fs.DurationVar(&cfg.Rules.RatePeriod, "decision-period", cfg.Rules.RatePeriod, "quarantines: the period of -decision-rate")
	fs.IntVar(&cfg.Rules.MaxPending, "max-pending-decisions", cfg.Rules.MaxPending, "quarantines: at most this many decisions wait for a limit to free (past it the flooding namespace's oldest is dropped; metric meshward_quarantine_held_dropped_total)")
	fs.DurationVar(&cfg.Detect.Horizon, "detect-horizon", cfg.Detect.Horizon, "lateral movement: how long a principal's new destinations are remembered (slow fan-out)")
	fs.IntVar(&cfg.Detect.MaxSources, "detect-max-sources", cfg.Detect.MaxSources, "lateral movement: at most this many principals followed (past it the least recently seen without an incident is forgotten; metric meshward_detector_evictions_total)")
	f.qns = fs.String("quarantine-namespaces", "", "quarantines: the namespaces meshward may write AuthorizationPolicies in, comma-separated, as its Role allows (empty: all, a ClusterRole)")
	f.protected = fs.String("protected", strings.Join(cfg.Rules.Protected, ","), "quarantines: namespaces never fenced (comma-separated)")
	f.kubeconfig = fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG): elect the leader with a Kubernetes Lease, and write quarantines as AuthorizationPolicies, through it (in a pod the service account is used without either; none: a lock in Redis; serve never reads ~/.kube/config on its own)")
	f.leaseNS = fs.String("lease-namespace", "", "namespace of the leader Lease (default: the pod's namespace in a cluster, the kubeconfig context's namespace otherwise)")
	fs.StringVar(&cfg.LeaseName, "lease-name", cfg.LeaseName, "name of the leader Lease")
	f.wasmPlugin = fs.String("wasmplugin", "", "namespace/name of an Istio WasmPlugin template: the leader gives each workload of its namespace a WasmPlugin of its own with its section of the model in force (never a canary)")
	fs.Int64Var(&cfg.Trainer.SamplesPerDestination, "samples-per-destination", cfg.Trainer.SamplesPerDestination, "training: the most samples one destination contributes to a round (its sources share them fairly)")
	fs.Int64Var(&cfg.Trainer.SamplesPerSource, "samples-per-source", cfg.Trainer.SamplesPerSource, "training: the most samples one source contributes to a destination of many sources (with fewer, each may keep an equal part of -samples-per-destination): sending more buys no more weight")
	fs.IntVar(&cfg.Trainer.MaxSectionBytes, "max-section-bytes", cfg.Trainer.MaxSectionBytes, "the size budget of one workload's section of the model (what one sidecar receives); a section over it is refused, naming its workload, which keeps its section in force")
}

// readValueKey reads a value key file (-value-key-file): 32 hex digits,
// white space around them ignored.
func readValueKey(path string) (models.ValueKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return models.ValueKey{}, fmt.Errorf("%w: -value-key-file: %v", ErrUsage, err)
	}
	k, err := models.ParseValueKey(strings.TrimSpace(string(b)))
	if err != nil {
		return models.ValueKey{}, fmt.Errorf("%w: -value-key-file %s: %v", ErrUsage, path, err)
	}
	return k, nil
}

// serve runs the control plane until interrupted.
func serve(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	cfg := server.DefaultConfig()
	var f serveFlags
	f.register(fs, &cfg)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *f.wasmPlugin != "" {
		ns, name, err := wasmplugin.ParseRef(*f.wasmPlugin)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUsage, err)
		}
		cfg.WasmPlugin.Namespace, cfg.WasmPlugin.Name = ns, name
	}
	target, err := kube.Find(*f.kubeconfig, false)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if target != nil {
		cfg.Kube, cfg.LeaseNamespace = target.Config, target.Namespace
		if *f.leaseNS != "" {
			cfg.LeaseNamespace = *f.leaseNS
		}
	}
	cfg.Rules.Protected = strings.Split(*f.protected, ",")
	if *f.valueKeyFile != "" {
		k, err := readValueKey(*f.valueKeyFile)
		if err != nil {
			return err
		}
		cfg.XDS.Base.ValueKey = k.Hex()
	}
	cfg.XDS.Base.Mode = pluginconfig.Mode(*f.mode)
	switch cfg.XDS.Base.Mode {
	case pluginconfig.ModeLearn, pluginconfig.ModeMonitor, pluginconfig.ModeEnforce:
	default:
		return fmt.Errorf("%w: -filter-mode %q is not learn, monitor or enforce", ErrUsage, *f.mode)
	}
	if *f.denyReasons != "" {
		cfg.XDS.Base.DenyReasons = strings.Split(*f.denyReasons, ",")
		if _, err := enforcement.ParseDenyReasons(cfg.XDS.Base.DenyReasons); err != nil {
			return fmt.Errorf("%w: -filter-deny-reasons: %w", ErrUsage, err)
		}
	}
	if err := f.sec.apply(&cfg); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	if cfg.XDS.WasmURI != "" && cfg.XDS.Identity == xds.IdentityNone {
		log.Warn("xDS checks no client identity (-xds-identity=none): any client can read any workload's model; for loopback development only")
	}
	if cfg.Collector.Identity == collector.ModeToken {
		log.Warn("the collector takes bearer tokens (-collector-identity=token): for local development only")
	}
	// Quarantines go to -policy-dir or -xds-rbac when asked, else to the
	// API server when there is one (-kubeconfig, or in a pod).
	switch {
	case cfg.RBACOverXDS && *f.policyDir != "":
		return fmt.Errorf("%w: quarantines go to one place: -policy-dir or -xds-rbac", ErrUsage)
	case cfg.RBACOverXDS:
	case *f.policyDir == "" && target != nil:
		var namespaces []string
		if *f.qns != "" {
			namespaces = strings.Split(*f.qns, ",")
		}
		a, err := newApplier(target.Config, cfg.Rules, namespaces, log)
		if err != nil {
			return err
		}
		cfg.Quarantine = a
	case *f.policyDir != "":
		d, err := enforce.NewDir(*f.policyDir, cfg.Rules, log)
		if err != nil {
			return err
		}
		cfg.Quarantine = d
	}
	s, err := server.New(cfg, log)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := s.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "collector %s%s, admin %s (Ctrl-C stops)\n", s.CollectorURL, record.Path, s.AdminURL)
	<-ctx.Done()
	log.Info("stopping")
	return s.Close()
}

// status reads a running control plane's admin API.
func status(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	admin := fs.String("admin", "http://127.0.0.1:9091", "the control plane's admin URL")
	var af adminFlags
	af.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	client, err := af.client()
	if err != nil {
		return err
	}
	resp, err := client.Get(*admin + "/readyz")
	if err != nil {
		return fmt.Errorf("control plane at %s: %w", *admin, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Fprintf(stdout, "ready: %s", b)
	for _, what := range []string{"models", "incidents", "quarantines", "exceptions"} {
		resp, err := client.Get(*admin + "/api/v1/" + what)
		if err != nil {
			return err
		}
		if err := refused(resp, what); err != nil {
			return err
		}
		// The answer has other fields beside the list (models: current).
		var v map[string]json.RawMessage
		var list []json.RawMessage
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err == nil {
			err = json.Unmarshal(v[what], &list)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		fmt.Fprintf(stdout, "%s: %d\n", what, len(list))
	}
	if err := rolloutStatus(client, *admin, stdout); err != nil {
		return err
	}
	return workloadsStatus(client, *admin, stdout)
}

// rolloutStatus prints the model in force, the canary and the last decision.
func rolloutStatus(client *http.Client, admin string, stdout io.Writer) error {
	resp, err := client.Get(admin + "/api/v1/rollouts")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := refused(resp, "rollouts"); err != nil {
		return err
	}
	var r struct {
		Current string `json:"current"`
		Canary  *struct {
			SHA256  string    `json:"sha256"`
			Started time.Time `json:"started"`
		} `json:"canary"`
		Decisions []struct {
			SHA256, Outcome, Reason string
		} `json:"decisions"`
		NACKs []struct{ Group, Node, Version, Error string } `json:"nacks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("rollouts: %w", err)
	}
	fmt.Fprintf(stdout, "model in force: %.12s\n", r.Current)
	if r.Canary != nil {
		fmt.Fprintf(stdout, "canary: %.12s, watched since %s\n", r.Canary.SHA256, r.Canary.Started.Format(time.RFC3339))
	}
	if len(r.Decisions) > 0 {
		d := r.Decisions[0]
		fmt.Fprintf(stdout, "last canary decision: %.12s %s: %s\n", d.SHA256, d.Outcome, d.Reason)
	}
	if n := len(r.NACKs); n > 0 {
		last := r.NACKs[n-1]
		fmt.Fprintf(stdout, "NACKs: %d; last: node %s (%s) refused %.12s: %s\n", n, last.Node, last.Group, last.Version, last.Error)
	}
	return nil
}
