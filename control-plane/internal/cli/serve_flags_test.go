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
