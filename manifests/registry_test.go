package manifests

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/meshward/meshward/control-plane/image"
	"github.com/meshward/meshward/internal/registrytest"
	"github.com/meshward/meshward/manifests/internal/pin"
)

// The whole path a WasmPlugin takes: the built module, packed as make image
// packs it, pushed to a registry (in process, on loopback) under the
// WasmPlugin's repository and tag, pulled back as Istio pulls it. The
// pulled digest is the one the WasmPlugin pins and plugin.wasm is the
// module.
func TestWasmPluginImageThroughARegistry(t *testing.T) {
	module := builtWasm(t)
	img, err := image.Wasm(module)
	if err != nil {
		t.Fatal(err)
	}
	reg := registrytest.Start(t)

	var wp struct {
		Spec struct {
			URL    string `yaml:"url"`
			SHA256 string `yaml:"sha256"`
		} `yaml:"spec"`
	}
	if err := yamlUnmarshal(read(t, pin.WasmPluginFile), &wp); err != nil {
		t.Fatal(err)
	}
	ref, ok := strings.CutPrefix(wp.Spec.URL, "oci://")
	if !ok {
		t.Fatalf("the WasmPlugin's url %q is not oci://", wp.Spec.URL)
	}
	orig, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	// The same repository path and tag, on the local registry.
	local := reg + "/" + orig.Context().RepositoryStr() + ":" + orig.Identifier()
	if _, err := image.Push(img, local, true); err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(local, name.Insecure)
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	d, err := pulled.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d.Hex != wp.Spec.SHA256 {
		t.Fatalf("pulled image digest %s, the WasmPlugin pins %s: run `make manifests`", d.Hex, wp.Spec.SHA256)
	}
	layers, err := pulled.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers, %v", len(layers), err)
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
	h, err := tr.Next()
	if err != nil || h.Name != image.WasmFileName {
		t.Fatalf("first entry %v, %v; want %s", h, err, image.WasmFileName)
	}
	got, _ := io.ReadAll(tr)
	if !bytes.Equal(got, module) {
		t.Fatalf("plugin.wasm is %d bytes, not the %d-byte module", len(got), len(module))
	}
}
