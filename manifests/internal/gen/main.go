// Command gen writes what manifests/ derives from code (make manifests):
// the Grafana dashboard and the PrometheusRule (from
// manifests/internal/monitoring) and the module digests the WasmPlugin and
// the EnvoyFilter pin (from the built filter).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meshward/meshward/manifests/internal/monitoring"
	"github.com/meshward/meshward/manifests/internal/pin"
)

func main() {
	dir := flag.String("dir", "manifests", "the manifests directory")
	wasm := flag.String("wasm", "build/meshward.wasm", "the compiled filter")
	flag.Parse()
	if err := run(*dir, *wasm); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir, wasm string) error {
	dash, err := monitoring.DashboardJSON()
	if err != nil {
		return err
	}
	rules, err := monitoring.PrometheusRuleYAML()
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{"monitoring/meshward-dashboard.json": dash, "monitoring/prometheusrule.yaml": rules} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	mod, err := os.ReadFile(wasm)
	if err != nil {
		return fmt.Errorf("%w (make wasm builds it)", err)
	}
	d, err := pin.For(mod)
	if err != nil {
		return err
	}
	if err := pin.Write(dir, d); err != nil {
		return err
	}
	fmt.Printf("manifests: dashboard, alert rules; WasmPlugin image sha256 %s, EnvoyFilter module sha256 %s\n", d.Image, d.Module)
	return nil
}
