package cli

import (
	"bytes"
	"context"
	"flag"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/control-plane/server"
	"github.com/meshward/meshward/internal/kubetest"
)

// The control plane's Deployment, as every kustomization under manifests/
// renders it, runs `meshward serve` with flags serve really defines (the
// FlagSet serve parses).
func TestDeploymentsUseRealServeFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("renders the manifests with kubectl kustomize (make kube builds it): skipped under -short (make unit); make test runs it")
	}
	kubectl := filepath.Join(kubetest.AssetsDir(), "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("kubectl not found (run `make kube`): %v", err)
	}
	flags := flag.NewFlagSet("serve", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	cfg := server.DefaultConfig()
	new(serveFlags).register(flags, &cfg)
	var kustomizations []string
	err := filepath.WalkDir(filepath.Join("..", "..", "..", "manifests"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			kustomizations = append(kustomizations, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	deployments := 0
	for _, k := range kustomizations {
		dir := filepath.Dir(k)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var out, errOut bytes.Buffer
		cmd := exec.CommandContext(ctx, kubectl, "kustomize", dir)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, errOut.String())
		}
		dec := yaml.NewDecoder(&out)
		for {
			var obj struct {
				Kind     string `yaml:"kind"`
				Metadata struct {
					Name string `yaml:"name"`
				} `yaml:"metadata"`
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Args []string `yaml:"args"`
							} `yaml:"containers"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			if dec.Decode(&obj) != nil {
				break
			}
			if obj.Kind != "Deployment" || obj.Metadata.Name != "meshward" {
				continue
			}
			deployments++
			args := obj.Spec.Template.Spec.Containers[0].Args
			if len(args) == 0 || args[0] != "serve" {
				t.Fatalf("%s: args %v do not run serve", dir, args)
			}
			for _, a := range args[1:] {
				name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if !strings.HasPrefix(a, "-") || flags.Lookup(name) == nil {
					t.Errorf("%s: meshward serve has no flag %q", dir, a)
				}
			}
		}
	}
	if deployments < 5 {
		t.Errorf("%d renderings of the control plane's Deployment, want one per installation variant (istio base, its overlays, istio-ecds)", deployments)
	}
}

// flagName is a flag as an error names it.
var flagName = regexp.MustCompile(`-[a-z][a-z0-9-]*[a-z0-9]`)

// Bad values are refused all at once, each problem naming the flag that
// set it, as the user typed it.
func TestServeNamesTheFlagsOfBadValues(t *testing.T) {
	bad := map[string]string{
		"max-quarantines": "0", "max-quarantines-per-namespace": "0", "decision-rate": "0", "decision-rate-per-namespace": "0",
		"promote-after": "-1s", "quarantine-ttl": "0s", "max-pending-decisions": "0",
		"detect-horizon": "1s", "detect-max-sources": "0",
		"canary-min-requests": "0", "canary-max-ratio": "0.5", "canary-max-increase": "2", "canary-observe": "2h", "canary-timeout": "1h",
		"canary-share": "2", "xds-group-ttl": "-1s", "xds-max-groups": "-1", "max-section-bytes": "10", "samples-per-destination": "5", "samples-per-source": "1",
		"collector-max-batch-bytes": "10", "collector-max-records": "0", "collector-max-in-flight": "0",
		"collector-read-timeout": "0s", "collector-max-skew": "0s", "trust-domain": "bad domain",
	}
	args := []string{"serve", "-wasm-uri", "/dev/null"}
	for f, v := range bad {
		args = append(args, "-"+f+"="+v)
	}
	err := Main(args, io.Discard, io.Discard)
	if ExitCode(err) != 2 {
		t.Fatalf("serve with bad values: %v, want a usage error", err)
	}
	named := map[string]bool{}
	for _, n := range flagName.FindAllString(err.Error(), -1) {
		named[n[1:]] = true
	}
	for f := range bad {
		if !named[f] {
			t.Errorf("the error does not name -%s:\n%v", f, err)
		}
	}
}
