// Command meshward is the control plane and the operator's tool: today it
// trains a model from JSONL requests and inspects models; the control plane
// itself (serve, run) arrives with the control-plane work.
package main

import (
	"fmt"
	"os"

	"github.com/meshward/meshward/control-plane/internal/cli"
)

func main() {
	if err := cli.Main(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "meshward:", err)
		os.Exit(cli.ExitCode(err))
	}
}
