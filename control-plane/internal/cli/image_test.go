package cli

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/meshward/meshward/internal/registrytest"
)

// image build writes both layouts; image push sends the Wasm image to a
// registry under the digest build printed.
func TestImageBuildAndPush(t *testing.T) {
	dir := t.TempDir()
	wasm, bin := filepath.Join(dir, "f.wasm"), filepath.Join(dir, "meshward")
	if err := os.WriteFile(wasm, []byte("\x00asm\x01\x00\x00\x00 module"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A real static binary: the image refuses anything else.
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir, build.Env = dir, append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-buildvcs=false")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	var out bytes.Buffer
	if err := Main([]string{"image", "build", "-wasm", wasm, "-binary", bin, "-out", filepath.Join(dir, "oci")}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(strings.SplitN(out.String(), "\n", 2)[0])
	if len(fields) < 2 || !strings.HasPrefix(fields[1], "sha256:") {
		t.Fatalf("build printed %q", out.String())
	}
	built := fields[1]

	reg := registrytest.Start(t)
	ref := reg + "/meshward/meshward-wasm:t"
	out.Reset()
	if err := Main([]string{"image", "push", "-insecure", filepath.Join(dir, "oci", "wasm"), ref}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out.String()) != ref+"@"+built {
		t.Fatalf("push printed %q, want %s@%s", out.String(), ref, built)
	}
	r, _ := name.ParseReference(ref, name.Insecure)
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != built {
		t.Fatalf("the registry holds %s, build printed %s", desc.Digest, built)
	}
	if err := Main([]string{"image", "push", filepath.Join(dir, "oci", "wasm")}, io.Discard, io.Discard); err == nil {
		t.Fatal("push without a reference succeeded")
	}
}
