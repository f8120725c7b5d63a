package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/control-plane/policy"
	"github.com/meshward/meshward/control-plane/quarantine"
)

const policyUsage = `meshward policy — the quarantines meshward holds

  meshward policy list [--kubeconfig K | --dir D] [--json]   every standing quarantine
  meshward policy show ID [--kubeconfig K | --dir D]         one quarantine (JSON: decision, objects)
  meshward policy release ID [--kubeconfig K | --dir D]      remove a quarantine now (audited)
  meshward policy export --out DIR [--kubeconfig K]          write them as YAML, one file per quarantine, for GitOps

The quarantines are read from the Kubernetes API server (--kubeconfig, else
$KUBECONFIG or ~/.kube/config; --in-cluster inside a pod): meshward's
AuthorizationPolicies, found by their label app.kubernetes.io/managed-by=meshward.
With --dir they are the YAML files a "serve --policy-dir" or "run --out" wrote.
`

// policyCmd is "meshward policy".
func policyCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, policyUsage)
		if len(args) == 0 {
			return fmt.Errorf("%w: policy needs a subcommand: list, show, release or export", ErrUsage)
		}
		return nil
	}
	sub := args[0]
	fs := newFlags("policy "+sub, stderr)
	var kf kubeFlags
	kf.register(fs, "where the quarantines are")
	dir := fs.String("dir", "", "a directory of quarantine YAML files instead of the API server")
	asJSON := fs.Bool("json", false, "list: print JSON")
	out := fs.String("out", "", "export: the directory to write to")
	// Flags may follow the ID (policy show ID --kubeconfig K).
	var pos []string
	rest := args[1:]
	for {
		if err := parse(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	_ = fs.Parse(pos) // positional arguments only: fs.Arg and fs.NArg see them
	needID := sub == "show" || sub == "release"
	switch {
	case sub != "list" && sub != "show" && sub != "release" && sub != "export":
		return fmt.Errorf("%w: unknown policy subcommand %q (want list, show, release or export)", ErrUsage, sub)
	case needID && fs.NArg() != 1:
		return fmt.Errorf("%w: policy %s needs exactly one quarantine ID", ErrUsage, sub)
	case !needID && fs.NArg() != 0:
		return fmt.Errorf("%w: policy %s takes no arguments", ErrUsage, sub)
	case sub == "export" && *out == "":
		return fmt.Errorf("%w: policy export needs --out DIR", ErrUsage)
	case sub == "export" && *dir != "":
		return fmt.Errorf("%w: policy export reads the API server; --dir is already YAML", ErrUsage)
	}
	rules := decide.DefaultRules()
	var qs []quarantine.Quarantine
	var release func(id string) error
	if *dir != "" {
		sink, err := enforce.NewDir(*dir, rules, auditLog(stderr))
		if err != nil {
			return err
		}
		ds, err := enforce.ReadDir(*dir)
		if err != nil {
			return err
		}
		for _, d := range ds {
			q := quarantine.Quarantine{Decision: d}
			for _, t := range d.Deny {
				q.Policies = append(q.Policies, quarantine.Ref{Namespace: t.Namespace, Name: policy.Name(d.ID, t.Name), Target: t.Workload})
			}
			qs = append(qs, q)
		}
		release = func(id string) error { return sink.Release(context.Background(), id) }
	} else {
		a, err := kf.applier(rules, auditLog(stderr))
		if err != nil {
			return err
		}
		qs = a.List()
		release = func(id string) error { return a.Release(context.Background(), id) }
	}
	find := func(id string) (quarantine.Quarantine, error) {
		for _, q := range qs {
			if q.Decision.ID == id {
				return q, nil
			}
		}
		return quarantine.Quarantine{}, fmt.Errorf("%w: %s (meshward policy list shows the IDs)", quarantine.ErrUnknown, id)
	}
	switch sub {
	case "list":
		if *asJSON {
			return writeJSON(stdout, map[string]any{"quarantines": qs})
		}
		fmt.Fprintf(stdout, "%-36s %-8s %-20s %-56s %s\n", "ID", "MODE", "EXPIRES", "PRINCIPAL", "DENIED DESTINATIONS")
		for _, q := range qs {
			var ts []string
			for _, t := range q.Decision.Deny {
				ts = append(ts, t.Workload)
			}
			fmt.Fprintf(stdout, "%-36s %-8s %-20s %-56s %s\n", q.Decision.ID, q.Decision.Mode, q.Decision.Expires.UTC().Format(policy.TimeFormat), q.Decision.Principal, strings.Join(ts, ","))
		}
		return nil
	case "show":
		q, err := find(fs.Arg(0))
		if err != nil {
			return err
		}
		return writeJSON(stdout, q)
	case "release":
		if _, err := find(fs.Arg(0)); err != nil {
			return err
		}
		if err := release(fs.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "released %s\n", fs.Arg(0))
		return nil
	}
	// export
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, q := range qs {
		aps, err := policy.Istio(q.Decision)
		if err != nil {
			return err
		}
		b, err := policy.YAML(aps)
		if err != nil {
			return err
		}
		path := filepath.Join(*out, q.Decision.ID+".yaml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", path)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
