package manifests

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// serveFlags reads the flags `meshward serve` defines, from its source
// (every fs.<Type>Var(&x, "name", …) and fs.<Type>("name", …) call in serve,
// and in the register method of its security flags).
func serveFlags(t *testing.T) map[string]bool {
	fset := token.NewFileSet()
	flags := map[string]bool{}
	for _, f := range []struct{ file, fn string }{{"serve.go", "serve"}, {"security.go", "register"}} {
		file, err := parser.ParseFile(fset, filepath.Join("..", "control-plane", "internal", "cli", f.file), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		inspectFlags(file, f.fn, flags)
	}
	if !flags["redis"] || !flags["wasm-uri"] || !flags["collector-identity"] {
		t.Fatalf("serve's flags were not found in its source: %v", flags)
	}
	return flags
}

// inspectFlags adds the flags function fn of file defines.
func inspectFlags(file *ast.File, name string, flags map[string]bool) {
	ast.Inspect(file, func(n ast.Node) bool {
		fn, ok := n.(*ast.FuncDecl)
		if !ok {
			return true
		}
		if fn.Name.Name != name {
			return false
		}
		ast.Inspect(fn, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, isIdent := sel.X.(*ast.Ident); !isIdent || x.Name != "fs" {
				return true
			}
			for _, a := range call.Args {
				if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					name, _ := strconv.Unquote(lit.Value)
					flags[name] = true
					break
				}
			}
			return true
		})
		return false
	})
}

// The control plane's Deployment, as every variant renders it, runs
// `meshward serve` with flags serve really has.
func TestDeploymentUsesRealServeFlags(t *testing.T) {
	flags := serveFlags(t)
	env := cluster(t)
	dir := workdir(t)
	for _, k := range kustomizations {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := env.RunKubectl(ctx, "kustomize", filepath.Join(dir, k))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(strings.NewReader(out))
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
			args := obj.Spec.Template.Spec.Containers[0].Args
			if len(args) == 0 || args[0] != "serve" {
				t.Fatalf("%s: args %v do not run serve", k, args)
			}
			for _, a := range args[1:] {
				name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if !strings.HasPrefix(a, "-") || !flags[name] {
					t.Errorf("%s: meshward serve has no flag %q", k, a)
				}
			}
		}
	}
}
