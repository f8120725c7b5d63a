// Package pin keeps the module digests the manifests pin in step with the
// built filter: the WasmPlugin pins the Wasm image's manifest digest (what
// Istio compares after pulling the oci:// image), the EnvoyFilter's default
// configuration pins the module's own sha256 (what Envoy compares after an
// HTTP fetch). Both follow from build/meshward.wasm alone, because the image
// is built reproducibly (control-plane/image).
package pin

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/meshward/meshward/control-plane/image"
)

// The files that pin a digest, relative to manifests/.
const (
	WasmPluginFile  = "istio/base/wasmplugin.yaml"
	EnvoyFilterFile = "istio-ecds/envoyfilter.yaml"
)

// Digests are what the manifests must pin for a module.
type Digests struct {
	// Image is the Wasm image's manifest digest (hex), for the WasmPlugin.
	Image string
	// Module is the module's sha256 (hex), for Envoy's remote data source.
	Module string
}

// For computes the digests of a compiled module.
func For(module []byte) (Digests, error) {
	img, err := image.Wasm(module)
	if err != nil {
		return Digests{}, err
	}
	d, err := image.Digest(img)
	if err != nil {
		return Digests{}, err
	}
	sum := sha256.Sum256(module)
	return Digests{Image: d, Module: hex.EncodeToString(sum[:])}, nil
}

var line = regexp.MustCompile(`(?m)^(\s*sha256:\s*)([0-9a-f]{64})\s*$`)

// Pinned returns the one sha256 a manifest pins.
func Pinned(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	m := line.FindAllSubmatch(b, -1)
	if len(m) != 1 {
		return "", fmt.Errorf("%s: %d 'sha256: <64 hex digits>' lines, want exactly 1", path, len(m))
	}
	return string(m[0][2]), nil
}

// Write makes every pinning manifest under dir pin d.
func Write(dir string, d Digests) error {
	for file, want := range map[string]string{WasmPluginFile: d.Image, EnvoyFilterFile: d.Module} {
		path := filepath.Join(dir, file)
		if _, err := Pinned(path); err != nil {
			return err
		}
		b, _ := os.ReadFile(path)
		b = line.ReplaceAll(b, []byte("${1}"+want))
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Check reports every manifest under dir that does not pin d.
func Check(dir string, d Digests) error {
	var errs []error
	for file, want := range map[string]string{WasmPluginFile: d.Image, EnvoyFilterFile: d.Module} {
		path := filepath.Join(dir, file)
		got, err := Pinned(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if got != want {
			errs = append(errs, fmt.Errorf("%s pins sha256 %s, but the built filter needs %s: run `make manifests`", path, got, want))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return joinSorted(errs)
}
