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

	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/filter/pluginconfig"
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
	fs.StringVar(&cfg.XDS.WasmSHA256, "wasm-sha256", "", "sha256 of the module at a remote -wasm-uri (default: that of -wasm-file)")
	fs.StringVar(&cfg.WasmFile, "wasm-file", "", "a meshward.wasm the admin endpoint serves at /wasm/meshward.wasm (point -wasm-uri there)")
	fs.BoolVar(&cfg.XDS.LearnFirst, "filter-learn-first", false, "before any model exists, serve connecting Envoys the filter in learn mode (it ships samples to -filter-collector-cluster)")
	mode := fs.String("filter-mode", string(cfg.XDS.Base.Mode), "the mode xDS gives the filters: learn, monitor or enforce")
	fs.StringVar(&cfg.XDS.Base.CollectorCluster, "filter-collector-cluster", "", "the Envoy cluster filters ship records to (empty: none)")
	fs.DurationVar(&cfg.TrainEvery, "train-every", cfg.TrainEvery, "how often to retrain from the collected samples (0: only on demand, POST /api/v1/train)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg.XDS.Base.Mode = pluginconfig.Mode(*mode)
	switch cfg.XDS.Base.Mode {
	case pluginconfig.ModeLearn, pluginconfig.ModeMonitor, pluginconfig.ModeEnforce:
	default:
		return fmt.Errorf("%w: -filter-mode %q is not learn, monitor or enforce", ErrUsage, *mode)
	}
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
	for _, what := range []string{"models", "incidents"} {
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
