// Command wasmbuild builds a proxy-wasm module of this repository the way
// make does (see package wasmbuild):
//
//	go run ./filter/wasmbuild/cmd/wasmbuild -o build/meshward.wasm ./filter
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/meshward/meshward/filter/wasmbuild"
)

func main() {
	out := flag.String("o", "", "the module to write (required)")
	overlay := flag.String("overlay-dir", "", "where the patched runtime files go (default: under the system's temporary directory)")
	unpatched := flag.Bool("unpatched", false, "build with Go's runtime as it is (to reproduce the poll_oneoff trap on Envoy 1.33–1.38)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: wasmbuild -o OUT.wasm PACKAGE")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := wasmbuild.Build(*out, flag.Arg(0), wasmbuild.Options{OverlayDir: *overlay, Unpatched: *unpatched}); err != nil {
		fmt.Fprintln(os.Stderr, "wasmbuild:", err)
		os.Exit(1)
	}
}
