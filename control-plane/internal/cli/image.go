package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/meshward/meshward/control-plane/image"
)

// imageCmd is `meshward image build|push`: the OCI images, without a
// container engine.
func imageCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: image needs a subcommand: build or push", ErrUsage)
	}
	switch args[0] {
	case "build":
		return imageBuild(args[1:], stdout, stderr)
	case "push":
		return imagePush(args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: unknown image subcommand %q (want build or push)", ErrUsage, args[0])
}

// imageBuild writes OUT/wasm (the filter for WasmPlugin) and OUT/meshward
// (the control plane) as OCI image layouts and prints their digests.
func imageBuild(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("image build", stderr)
	wasm := fs.String("wasm", "build/meshward.wasm", "the compiled filter")
	bin := fs.String("binary", "build/meshward", "the meshward binary (static, GOOS=linux)")
	arch := fs.String("arch", runtime.GOARCH, "the binary's architecture")
	out := fs.String("out", "build/oci", "directory for the two OCI image layouts")
	if err := parse(fs, args); err != nil {
		return err
	}
	mod, err := os.ReadFile(*wasm)
	if err != nil {
		return err
	}
	exe, err := os.ReadFile(*bin)
	if err != nil {
		return err
	}
	w, err := image.Wasm(mod)
	if err != nil {
		return fmt.Errorf("%s: %w", *wasm, err)
	}
	cp, err := image.ControlPlane(exe, mod, *arch)
	if err != nil {
		return err
	}
	if err := image.WriteLayout(filepath.Join(*out, "wasm"), w, "meshward-wasm"); err != nil {
		return err
	}
	if err := image.WriteLayout(filepath.Join(*out, "meshward"), cp, "meshward"); err != nil {
		return err
	}
	wd, _ := image.Digest(w)
	cd, _ := image.Digest(cp)
	fmt.Fprintf(stdout, "%s\tsha256:%s\tfilter (WasmPlugin sha256 %s)\n", filepath.Join(*out, "wasm"), wd, wd)
	fmt.Fprintf(stdout, "%s\tsha256:%s\tcontrol plane (linux/%s, user %d)\n", filepath.Join(*out, "meshward"), cd, *arch, image.UID)
	return nil
}

// imagePush pushes an OCI image layout to a registry reference.
func imagePush(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("image push", stderr)
	insecure := fs.Bool("insecure", false, "allow plain HTTP (a registry on localhost)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return fmt.Errorf("%w: image push [-insecure] LAYOUT-DIR REGISTRY/REPOSITORY:TAG", ErrUsage)
	}
	img, err := image.ReadLayout(fs.Arg(0))
	if err != nil {
		return err
	}
	d, err := image.Push(img, fs.Arg(1), *insecure)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s@sha256:%s\n", fs.Arg(1), d)
	return nil
}
