package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/meshward/meshward/internal/registrytest"
)

// module is a small valid Wasm header with a body, or the real filter when
// MESHWARD_WASM names it (make test builds it).
func module(t *testing.T) []byte {
	if p := os.Getenv("MESHWARD_WASM"); p != "" {
		if b, err := os.ReadFile(p); err == nil {
			return b
		}
	}
	return []byte("\x00asm\x01\x00\x00\x00 a stand-in module body")
}

// pluginWasm does what Istio's fetcher does with a compat-variant image:
// the last layer must be application/vnd.oci.image.layer.v1.tar+gzip and
// hold plugin.wasm.
func pluginWasm(t *testing.T, img v1.Image) []byte {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 {
		t.Fatalf("manifest media type %q, want %q", m.MediaType, types.OCIManifestSchema1)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers (%v), want 1", len(layers), err)
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Fatalf("layer media type %q, want %q", mt, types.OCILayer)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	gz, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no %s in the layer: %v", WasmFileName, err)
		}
		if h.Name == WasmFileName {
			b, _ := io.ReadAll(tr)
			return b
		}
	}
}

func TestWasmImageRoundTripsThroughARegistry(t *testing.T) {
	mod := module(t)
	img, err := Wasm(mod)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("not a valid image: %v", err)
	}
	again, _ := Wasm(mod)
	d1, _ := Digest(img)
	d2, _ := Digest(again)
	if d1 != d2 {
		t.Fatalf("two builds of the same module differ: %s, %s", d1, d2)
	}
	other, _ := Wasm(append(append([]byte{}, mod...), 0))
	if d3, _ := Digest(other); d3 == d1 {
		t.Fatal("a different module packs to the same digest")
	}

	// Through a layout on disk, as make image leaves it, then pushed.
	dir := filepath.Join(t.TempDir(), "wasm")
	if err := WriteLayout(dir, img, "meshward-wasm:test"); err != nil {
		t.Fatal(err)
	}
	// Writing again (another build) leaves only the new image's blobs.
	if err := WriteLayout(dir, other, "meshward-wasm:test"); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(dir, img, "meshward-wasm:test"); err != nil {
		t.Fatal(err)
	}
	blobs, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if len(blobs) != 3 { // manifest, config, layer
		t.Errorf("the layout holds %d blobs after a rebuild, want 3", len(blobs))
	}
	fromDisk, err := ReadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg := registrytest.Start(t)
	ref := reg + "/meshward/meshward-wasm:test"
	pushed, err := Push(fromDisk, ref, true)
	if err != nil {
		t.Fatal(err)
	}
	if pushed != d1 {
		t.Fatalf("pushed digest %s, built %s", pushed, d1)
	}

	// Pulled as Istio pulls it: the digest it compares with the WasmPlugin's
	// sha256 is the manifest digest, and plugin.wasm is the module.
	r, _ := name.ParseReference(ref, name.Insecure)
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	if pd, _ := pulled.Digest(); pd.Hex != d1 {
		t.Fatalf("pulled digest %s, want %s", pd.Hex, d1)
	}
	if got := pluginWasm(t, pulled); !bytes.Equal(got, mod) {
		t.Fatalf("plugin.wasm: %d bytes, want the %d-byte module", len(got), len(mod))
	}
}

func TestWasmRefusesWhatIsNotWasm(t *testing.T) {
	if _, err := Wasm([]byte("#!/bin/sh\n")); err == nil {
		t.Fatal("a shell script was packed as a Wasm image")
	}
}

// goBuild builds a tiny Go program for linux, with or without cgo.
func goBuild(t *testing.T, cgo bool) []byte {
	dir := t.TempDir()
	src := "package main\n\nfunc main() {}\n"
	if cgo {
		src = "package main\n\n// int one(void) { return 1; }\nimport \"C\"\n\nfunc main() { _ = C.one() }\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "hello")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOFLAGS=-buildvcs=false")
	if cgo {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=1")
	} else {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build (cgo %v): %v\n%s", cgo, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestControlPlaneImage(t *testing.T) {
	bin := goBuild(t, false)
	img, err := ControlPlane(bin, module(t), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("not a valid image: %v", err)
	}
	cf, _ := img.ConfigFile()
	if cf.Config.User != "65532:65532" || cf.Config.Entrypoint[0] != BinaryPath || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Fatalf("config: user %q, entrypoint %v, platform %s/%s", cf.Config.User, cf.Config.Entrypoint, cf.OS, cf.Architecture)
	}
	layers, _ := img.Layers()
	rc, _ := layers[0].Uncompressed()
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == strings.TrimPrefix(BinaryPath, "/") {
			if h.Mode&0o111 == 0 {
				t.Errorf("the binary is not executable: %o", h.Mode)
			}
			// What the image carries runs on its own (no loader, no libc).
			b, _ := io.ReadAll(tr)
			exe := filepath.Join(t.TempDir(), "meshward")
			if err := os.WriteFile(exe, b, 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(exe).CombinedOutput(); err != nil {
				t.Errorf("the image's binary does not run: %v %s", err, out)
			}
		}
	}
	all := strings.Join(names, " ")
	for _, want := range []string{"etc/passwd", "usr/local/bin/meshward", "usr/lib/meshward/meshward.wasm", "tmp/"} {
		if !strings.Contains(all, want) {
			t.Errorf("image lacks %s: %s", want, all)
		}
	}
	if strings.Contains(all, "bin/sh") {
		t.Errorf("image has a shell: %s", all)
	}
	if _, err := ControlPlane([]byte("MZ"), module(t), "amd64"); err == nil {
		t.Error("a non-ELF binary was accepted")
	}
	// A dynamically linked binary would not start on an empty base.
	if _, err := ControlPlane(goBuild(t, true), module(t), "amd64"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("a cgo binary: %v", err)
	}
	reg := registrytest.Start(t)
	if _, err := Push(img, reg+"/meshward/meshward:test", true); err != nil {
		t.Fatal(err)
	}
}
