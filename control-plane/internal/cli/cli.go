// Package cli is the meshward command line: flag parsing and wiring only;
// the work is done by the packages it calls.
package cli

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/meshward/meshward/control-plane/trainer"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

// ErrUsage marks errors in how the command was called (exit status 2).
var ErrUsage = errors.New("usage")

// errHelp ends a command after its -h output, successfully.
var errHelp = errors.New("help shown")

// ExitCode maps an error from Main to a process exit status.
func ExitCode(err error) int {
	if errors.Is(err, ErrUsage) {
		return 2
	}
	return 1
}

const usage = `meshward — a service-mesh traffic anomaly filter

Usage:
  meshward train [flags] FILE...        train a model from JSONL request records
  meshward replay -model M [flags] FILE... score captured traffic and report (native or the compiled filter)
  meshward run --traffic FILE [flags]   learn from the first part of the traffic, monitor the rest, report
  meshward gen [flags]                  write labelled synthetic mesh traffic (JSONL, pcap)
  meshward serve [flags]                run the control plane (store, collector, admin)
  meshward status [-admin URL] [--token-file F]  what a running control plane reports
  meshward allow -workload W -reason WHY -ttl D [what]  grant an exception (-list, -revoke ID)
  meshward preview [-mode enforce] [-since 24h]  what enforce mode would deny, from the records shipped
  meshward secret [flags]               create a Secret with a random value unless it exists (the Redis password)
  meshward policy list|show|release|export  the quarantines held in the API server (or a YAML directory)
  meshward model inspect FILE           describe a model or a section (binary, base64, or plugin config JSON)
  meshward model config -workload W FILE  print the plugin configuration of W's sidecar (W's section of the model)
  meshward image build|push [flags]     the filter's Wasm image and the control plane's image (OCI, no Docker)
  meshward version                      print the version

Run "meshward COMMAND -h" for a command's flags.
`

// Main runs the command line.
func Main(args []string, stdout, stderr io.Writer) error {
	if err := dispatch(args, stdout, stderr); err != nil && !errors.Is(err, errHelp) {
		return err
	}
	return nil
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command given", ErrUsage)
	}
	switch args[0] {
	case "train":
		return train(args[1:], stdout, stderr)
	case "replay":
		return replay(args[1:], stdout, stderr)
	case "run":
		return runTraffic(args[1:], stdout, stderr)
	case "gen":
		return genTraffic(args[1:], stdout, stderr)
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "allow":
		return allow(args[1:], stdout, stderr)
	case "preview":
		return previewCmd(args[1:], stdout, stderr)
	case "status":
		return status(args[1:], stdout, stderr)
	case "policy":
		return policyCmd(args[1:], stdout, stderr)
	case "secret":
		return secretCmd(args[1:], stdout, stderr)
	case "image":
		return imageCmd(args[1:], stdout, stderr)
	case "model":
		if len(args) < 2 {
			return fmt.Errorf("%w: model needs a subcommand: inspect or config", ErrUsage)
		}
		switch args[1] {
		case "inspect":
			return inspect(args[2:], stdout, stderr)
		case "config":
			return modelConfig(args[2:], stdout, stderr)
		}
		return fmt.Errorf("%w: unknown model subcommand %q (want inspect or config)", ErrUsage, args[1])
	case "version", "--version":
		fmt.Fprintln(stdout, "meshward", version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", ErrUsage, args[0])
}

// learnNormal learns a record unless it is labelled an attack (attacks are
// never learned as normal); it returns 1 for an attack, for counting.
func learnNormal(tr *models.Trainer, r *source.Record) int {
	if r.IsAttack() {
		return 1
	}
	tr.Observe(&r.Request)
	return 0
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("meshward "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return nil
}

func train(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("train", stderr)
	out := fs.String("out", "model.bin", "where to write the encoded model")
	seed := fs.Uint64("seed", models.DefaultTrainConfig().Seed, "training seed (same seed and input, same bytes)")
	fpr := fs.Float64("target-fpr", models.DefaultTrainConfig().TargetFPR, "false-positive rate the threshold is calibrated to")
	maxSection := fs.Int("max-section-bytes", trainer.DefaultMaxSectionBytes, "the size budget of one workload's section (what its sidecars receive): sections over it are named")
	var sf sourceFlags
	sf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: train needs at least one traffic file", ErrUsage)
	}
	cfg := models.DefaultTrainConfig()
	cfg.Seed, cfg.TargetFPR = *seed, *fpr
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		return err
	}
	var attacks int
	problems, err := eachRecord(fs.Args(), &sf, stderr, func(r *source.Record) error {
		attacks += learnNormal(tr, r)
		return nil
	})
	if err != nil {
		return err
	}
	m, err := tr.Model()
	if err != nil {
		return err
	}
	b, err := models.Encode(m)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return err
	}
	learned, capped, _, held := tr.Samples()
	largest, largestOf, over, err := largestSection(m, *maxSection)
	if err != nil {
		return err
	}
	for _, o := range over {
		fmt.Fprintf(stderr, "warning: the section of %s, over -max-section-bytes %d: its sidecars would not get it from the control plane\n", o, *maxSection)
	}
	fmt.Fprintf(stdout, "model %s: %d bytes, %d workloads (largest section %d bytes, %s), %d requests learned, %d held back for calibration, %d over a source's cap, %d attacks not learned, %d malformed lines skipped\n",
		m.SHA256()[:12], len(b), len(m.Workloads), largest, largestOf, learned, held, capped, attacks, len(problems))
	fmt.Fprintf(stdout, "wrote %s\n", *out)
	return nil
}

// largestSection is the size of the largest section of m (what one
// sidecar receives) and whose it is, and the sections over budget.
func largestSection(m *models.Model, budget int) (int, string, []string, error) {
	size, of := 0, ""
	var over []string
	for _, name := range sortedNames(m) {
		b, err := models.EncodeSection(m, name)
		if err != nil {
			return 0, "", nil, err
		}
		if len(b) > size {
			size, of = len(b), name
		}
		if len(b) > budget {
			over = append(over, fmt.Sprintf("%s (%d bytes)", name, len(b)))
		}
	}
	return size, of, over, nil
}

func sortedNames(m *models.Model) []string {
	names := make([]string, 0, len(m.Workloads))
	for n := range m.Workloads {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// loadModel reads a model (whole, or a section) as raw codec bytes, base64
// of them, or a plugin configuration document that carries one.
func loadModel(name string) (*models.Model, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	trimmed := strings.TrimSpace(string(b))
	switch {
	case strings.HasPrefix(trimmed, "{"):
		var c pluginconfig.Config
		if err := json.Unmarshal([]byte(trimmed), &c); err != nil {
			return nil, fmt.Errorf("%s: not a plugin configuration: %v", name, err)
		}
		if c.Model == "" {
			return nil, fmt.Errorf("%s: the plugin configuration carries no model", name)
		}
		trimmed = c.Model
		fallthrough
	case !strings.HasPrefix(trimmed, "MWMD"):
		raw, err := base64.StdEncoding.DecodeString(trimmed)
		if err != nil {
			return nil, fmt.Errorf("%s: neither a binary model nor base64 of one", name)
		}
		b = raw
	}
	m, err := models.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return m, nil
}

func inspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model inspect", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: model inspect needs exactly one file", ErrUsage)
	}
	m, err := loadModel(fs.Arg(0))
	if err != nil {
		return err
	}
	type wl struct {
		Name    string `json:"name"`
		Sources int    `json:"sources"`
		Routes  int    `json:"routes"`
		Edges   int    `json:"edges"`
	}
	summary := struct {
		SHA256 string `json:"sha256"`
		Bytes  int    `json:"bytes"`
		// SectionFor is the workload of a section ("" for a whole model).
		SectionFor string    `json:"section_for,omitempty"`
		TrainedAt  time.Time `json:"trained_at"`
		Samples    uint64    `json:"samples"`
		Seed       uint64    `json:"seed"`
		Threshold  float64   `json:"threshold"`
		TargetFPR  float64   `json:"target_fpr"`
		Workloads  []wl      `json:"workloads"`
	}{m.SHA256(), m.Size(), m.SectionFor, m.Meta.TrainedAt, m.Meta.Samples, m.Meta.Seed, m.Meta.Threshold, m.Meta.TargetFPR, nil}
	for _, w := range m.Workloads {
		summary.Workloads = append(summary.Workloads, wl{w.Name, len(w.Sources), len(w.Routes), len(w.Edges)})
	}
	sort.Slice(summary.Workloads, func(i, j int) bool { return summary.Workloads[i].Name < summary.Workloads[j].Name })
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(summary)
	}
	if m.SectionFor != "" {
		fmt.Fprintf(stdout, "section    %s of workload %s\nsize       %d bytes\nseed       %d\nthreshold  %.3f (target false-positive rate %g)\n",
			summary.SHA256, m.SectionFor, summary.Bytes, summary.Seed, summary.Threshold, summary.TargetFPR)
	} else {
		fmt.Fprintf(stdout, "model      %s\nsize       %d bytes\ntrained    %s on %d requests (seed %d)\nthreshold  %.3f (target false-positive rate %g)\n",
			summary.SHA256, summary.Bytes, summary.TrainedAt.Format(time.RFC3339), summary.Samples, summary.Seed, summary.Threshold, summary.TargetFPR)
	}
	fmt.Fprintf(stdout, "%-40s %8s %8s %8s\n", "WORKLOAD", "SOURCES", "ROUTES", "EDGES")
	for _, w := range summary.Workloads {
		fmt.Fprintf(stdout, "%-40s %8d %8d %8d\n", w.Name, w.Sources, w.Routes, w.Edges)
	}
	return nil
}

func modelConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model config", stderr)
	var c pluginconfig.Config
	mode := fs.String("mode", string(pluginconfig.ModeMonitor), "learn, monitor or enforce")
	fs.StringVar(&c.Workload, "workload", "", "the sidecar's workload (name.namespace): its section of the model goes in the configuration; required for a whole model")
	fs.StringVar(&c.CollectorCluster, "collector-cluster", "", "Envoy cluster of the collector")
	threshold := fs.Float64("threshold", 0, "override the model's calibrated threshold (0: keep it)")
	maxSection := fs.Int("max-section-bytes", trainer.DefaultMaxSectionBytes, "refuse a section over this size budget")
	valueKeyFile := fs.String("value-key-file", "", "the mesh's value key (serve -value-key-file), written as value_key: the filter digests short values with it")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: model config needs exactly one model file", ErrUsage)
	}
	if *valueKeyFile != "" {
		k, err := readValueKey(*valueKeyFile)
		if err != nil {
			return err
		}
		c.ValueKey = k.Hex()
	}
	m, err := loadModel(fs.Arg(0))
	if err != nil {
		return err
	}
	workload := c.Workload
	var b []byte
	switch {
	case m.SectionFor != "":
		// A section already: it goes in as it is, for its own workload
		// (the fallback section for any), and the check below refuses it
		// for another.
		if workload == "" {
			workload = m.SectionFor
			if m.SectionFor != models.GlobalWorkload {
				c.Workload = m.SectionFor
			}
		}
		b, err = models.Encode(m)
	case workload == "":
		return fmt.Errorf("%w: %s is a whole model of %d workloads: a filter takes one workload's section; say whose with -workload NAME.NAMESPACE", ErrUsage, fs.Arg(0), len(m.Workloads))
	default:
		b, err = models.EncodeSection(m, workload)
	}
	if err != nil {
		return err
	}
	if len(b) > *maxSection {
		return fmt.Errorf("the section of %s is %d bytes, over -max-section-bytes %d", workload, len(b), *maxSection)
	}
	c.Mode = pluginconfig.Mode(*mode)
	if *threshold != 0 {
		c.Threshold = threshold
	}
	c.WithModel(b)
	// Validate exactly as the filter will, so a bad document never leaves
	// here (a section given for another workload is refused by it).
	if _, err := c.Settings(workload); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(&c)
}
