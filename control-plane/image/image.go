// Package image builds meshward's two OCI images without a container
// engine (github.com/google/go-containerregistry), byte for byte the same
// for the same inputs:
//
//   - the filter as a Wasm image in the layout Istio's Wasm image fetcher
//     reads first (the "compat" variant of the Wasm image specification):
//     an OCI image whose single application/vnd.oci.image.layer.v1.tar+gzip
//     layer holds plugin.wasm. A WasmPlugin's sha256 is this image's
//     manifest digest (Istio compares it with the digest it pulls);
//   - the meshward control plane: a static binary on an empty base — a
//     passwd/group naming the non-root user 65532, the binary, and the
//     filter module (served to Envoys with serve -wasm-file) — and nothing
//     else: no shell, no package manager.
//
// Images are written as OCI image layouts (a directory) and pushed to a
// registry from there.
package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths and identities inside the control-plane image.
const (
	BinaryPath = "/usr/local/bin/meshward"
	// WasmPath is where the image carries the filter (serve -wasm-file).
	WasmPath = "/usr/lib/meshward/meshward.wasm"
	// UID and GID of the image's only user, "nonroot" (as distroless).
	UID = 65532
	// WasmFileName is the file name Istio's fetcher looks for in the layer.
	WasmFileName = "plugin.wasm"
)

// epoch is every timestamp in the images, so that builds are reproducible.
var epoch = time.Unix(0, 0).UTC()

// ErrNotWasm is returned for a module that does not start with the Wasm
// magic number (Istio refuses it after pulling; better to refuse it here).
var ErrNotWasm = errors.New("not a WebAssembly module")

// file is one entry of a layer.
type file struct {
	name string
	mode int64
	data []byte
	dir  bool
}

// layer packs files into a gzip-compressed OCI layer.
func layer(files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: epoch, Uid: 0, Gid: 0, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, strings.TrimSuffix(f.name, "/")+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// base is an empty OCI image (OCI media types, not Docker's).
func base() v1.Image {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

// Wasm returns the filter's Wasm image: one layer holding plugin.wasm.
func Wasm(module []byte) (v1.Image, error) {
	if !bytes.HasPrefix(module, []byte("\x00asm")) {
		return nil, ErrNotWasm
	}
	l, err := layer([]file{{name: WasmFileName, mode: 0o444, data: module}})
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(base(), mutate.Addendum{Layer: l, MediaType: types.OCILayer,
		Annotations: map[string]string{"org.opencontainers.image.title": WasmFileName}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created, cf.OS, cf.Architecture = v1.Time{Time: epoch}, "wasip1", "wasm"
	return mutate.ConfigFile(img, cf)
}

// ControlPlane returns the meshward image for linux/arch: the static binary
// (CGO_ENABLED=0), the filter module, run as the non-root user.
func ControlPlane(binary, module []byte, arch string) (v1.Image, error) {
	if err := static(binary); err != nil {
		return nil, fmt.Errorf("control-plane binary: %w", err)
	}
	if !bytes.HasPrefix(module, []byte("\x00asm")) {
		return nil, fmt.Errorf("filter module: %w", ErrNotWasm)
	}
	l, err := layer([]file{
		{name: "etc", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "home", mode: 0o755, dir: true},
		{name: "home/nonroot", mode: 0o700, dir: true},
		{name: "tmp", mode: 0o1777, dir: true},
		{name: "usr", mode: 0o755, dir: true},
		{name: "usr/local", mode: 0o755, dir: true},
		{name: "usr/local/bin", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(BinaryPath, "/"), mode: 0o555, data: binary},
		{name: "usr/lib", mode: 0o755, dir: true},
		{name: "usr/lib/meshward", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(WasmPath, "/"), mode: 0o444, data: module},
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(base(), mutate.Addendum{Layer: l, MediaType: types.OCILayer,
		Annotations: map[string]string{"org.opencontainers.image.title": "meshward"}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created, cf.OS, cf.Architecture = v1.Time{Time: epoch}, "linux", arch
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", UID, UID),
		Entrypoint: []string{BinaryPath},
		Cmd:        []string{"serve"},
		WorkingDir: "/home/nonroot",
		Env:        []string{"HOME=/home/nonroot"},
		ExposedPorts: map[string]struct{}{
			"9090/tcp": {}, "9091/tcp": {}, "18000/tcp": {},
		},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "meshward",
			"org.opencontainers.image.description": "meshward control plane: collector, trainer, xDS rollout",
		},
	}
	return mutate.ConfigFile(img, cf)
}

// static checks that a binary is a statically linked ELF executable: the
// image has no libc and no dynamic loader for anything else to run.
func static(binary []byte) error {
	f, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		return fmt.Errorf("not an ELF executable (build it with GOOS=linux CGO_ENABLED=0): %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked: the image has no dynamic loader (build it with CGO_ENABLED=0)")
		}
	}
	return nil
}

// Digest returns an image's manifest digest in hex: what a WasmPlugin's
// sha256 pins.
func Digest(img v1.Image) (string, error) {
	h, err := img.Digest()
	if err != nil {
		return "", err
	}
	return h.Hex, nil
}

// WriteLayout writes img as an OCI image layout in dir (replacing what a
// previous build left there), its reference name annotated with ref.
func WriteLayout(dir string, img v1.Image, ref string) error {
	// A layout keeps every blob written to it: start afresh, so the
	// directory holds this image and nothing else.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("layout %s: %w", dir, err)
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}))
}

// ReadLayout reads the one image of a layout written by WriteLayout.
func ReadLayout(dir string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("layout %s: %d images, want 1", dir, len(m.Manifests))
	}
	return idx.Image(m.Manifests[0].Digest)
}

// Push writes img to a registry reference (credentials from the Docker
// config, as docker login leaves them) and returns the pushed digest.
// insecure allows plain HTTP (a registry on localhost).
func Push(img v1.Image, ref string, insecure bool) (string, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return "", fmt.Errorf("reference %q: %w", ref, err)
	}
	if err := remote.Write(r, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	return Digest(img)
}
