package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/control-plane/kube"
	"github.com/meshward/meshward/control-plane/server"
)

// serve runs the control plane until interrupted.
func serve(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	cfg := server.DefaultConfig()
	fs.StringVar(&cfg.Redis, "redis", "", "Redis address (host:port); empty starts an embedded Redis-protocol server")
	fs.StringVar(&cfg.CollectorAddr, "collector-addr", cfg.CollectorAddr, "where the collector listens")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", cfg.AdminAddr, "where health, metrics and the JSON API listen")
	tokenFile := fs.String("collector-token-file", "", "file holding the collector's bearer token (or $MESHWARD_COLLECTOR_TOKEN)")
	fs.StringVar(&cfg.XDSAddr, "xds-addr", cfg.XDSAddr, "where ADS (the model rollout to Envoys) listens")
	fs.StringVar(&cfg.XDS.WasmURI, "wasm-uri", "", "where Envoys load meshward.wasm from (a local path, or a URL with -wasm-sha256); empty turns xDS off")
	fs.StringVar(&cfg.XDS.WasmSHA256, "wasm-sha256", "", "sha256 of the module at a remote -wasm-uri")
	fs.StringVar(&cfg.XDS.Base.CollectorCluster, "filter-collector-cluster", "", "the Envoy cluster filters ship records to (empty: none)")
	fs.DurationVar(&cfg.TrainEvery, "train-every", cfg.TrainEvery, "how often to retrain from the collected samples (0: only on demand, POST /api/v1/train)")
	fs.BoolVar(&cfg.RBACOverXDS, "xds-rbac", false, "quarantines: deliver them as Envoy RBAC over ADS (meshes without Istio; listeners name the meshward-rbac ECDS resource)")
	policyDir := fs.String("policy-dir", "", "quarantines: write AuthorizationPolicy YAML files here (GitOps) instead of to an API server")
	fs.BoolVar(&cfg.Rules.Enforce, "enforce", false, "quarantines: promote dry runs to enforcement after -promote-after (default: dry runs only)")
	fs.DurationVar(&cfg.Rules.PromoteAfter, "promote-after", cfg.Rules.PromoteAfter, "quarantines: how long a dry run lasts before it is enforced (with -enforce)")
	fs.DurationVar(&cfg.Rules.TTL, "quarantine-ttl", cfg.Rules.TTL, "quarantines: how long one lasts unless released")
	fs.IntVar(&cfg.Rules.MaxActive, "max-quarantines", cfg.Rules.MaxActive, "quarantines: at most this many at once")
	protected := fs.String("protected", strings.Join(cfg.Rules.Protected, ","), "quarantines: namespaces never fenced (comma-separated)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file: elect the leader with a Kubernetes Lease, and write quarantines as AuthorizationPolicies, through it (in a pod the service account is used without this flag; neither: a lock in Redis)")
	leaseNS := fs.String("lease-namespace", "", "namespace of the leader Lease (default: the pod's namespace in a cluster, the kubeconfig context's namespace otherwise)")
	fs.StringVar(&cfg.LeaseName, "lease-name", cfg.LeaseName, "name of the leader Lease")
	if err := parse(fs, args); err != nil {
		return err
	}
	target, err := kube.Find(*kubeconfig)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if target != nil {
		cfg.Kube, cfg.LeaseNamespace = target.Config, target.Namespace
		if *leaseNS != "" {
			cfg.LeaseNamespace = *leaseNS
		}
	}
	cfg.Rules.Protected = strings.Split(*protected, ",")
	cfg.CollectorToken = strings.TrimSpace(os.Getenv("MESHWARD_COLLECTOR_TOKEN"))
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		cfg.CollectorToken = strings.TrimSpace(string(b))
	}
	if cfg.XDS.Base.CollectorCluster != "" {
		cfg.XDS.Base.CollectorToken = cfg.CollectorToken
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	// Quarantines go to -policy-dir or -xds-rbac when asked, else to the
	// API server when there is one (-kubeconfig, or in a pod).
	switch {
	case cfg.RBACOverXDS && *policyDir != "":
		return fmt.Errorf("%w: quarantines go to one place: -policy-dir or -xds-rbac", ErrUsage)
	case cfg.RBACOverXDS:
	case *policyDir == "" && target != nil:
		a, err := newApplier(target.Config, cfg.Rules, log)
		if err != nil {
			return err
		}
		cfg.Quarantine = a
	case *policyDir != "":
		d, err := enforce.NewDir(*policyDir, cfg.Rules, log)
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
	fmt.Fprintf(stdout, "collector %s/v1/records, admin %s (Ctrl-C stops)\n", s.CollectorURL, s.AdminURL)
	<-ctx.Done()
	log.Info("stopping")
	return s.Close()
}

// status reads a running control plane's admin API.
func status(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	admin := fs.String("admin", "http://127.0.0.1:9091", "the control plane's admin URL")
	if err := parse(fs, args); err != nil {
		return err
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(*admin + "/readyz")
	if err != nil {
		return fmt.Errorf("control plane at %s: %w", *admin, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Fprintf(stdout, "ready: %s", b)
	for _, what := range []string{"models", "incidents", "quarantines"} {
		resp, err := client.Get(*admin + "/api/v1/" + what)
		if err != nil {
			return err
		}
		var v map[string][]json.RawMessage
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		fmt.Fprintf(stdout, "%s: %d\n", what, len(v[what]))
	}
	return nil
}
