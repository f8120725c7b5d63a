// Package wasmbuild builds meshward's filter (or any proxy-wasm module of
// this repository) the one way it is built everywhere: `make wasm`, the
// tests that build a module themselves, and hack/bench-ab.sh all come here,
// so the bytes they run are the bytes Envoy gets.
//
// A module is built by upstream Go for GOOS=wasip1 with -buildmode=c-shared,
// -trimpath and -buildvcs=false (reproducible: the Wasm image digest the
// manifests pin follows from the sources alone), and with two files of the
// Go runtime replaced through -overlay:
//
// Go's wasip1 runtime calls wasi_snapshot_preview1.poll_oneoff to poll its
// timers (netpoll, at every garbage collection once a timer exists, and the
// background scavenger arms one) and to sleep (usleep), and throws on any
// answer but success or EINTR. Envoy's Wasm host (proxy-wasm-cpp-host)
// answers ENOSYS from PR #427 until PR #533, that is in Envoy 1.33 to 1.38:
// there the VM dies at some garbage collection, after hours or minutes
// depending on the heap's history (golang/go#78513). The patch makes both
// calls treat ENOSYS and ENOTSUP as "nothing is ready" / "slept", which is
// what golang/go#78522 proposes and what cpp-host #533 answers from the host
// side. In a proxy-wasm module no goroutine waits on a timer or a file
// descriptor between host callbacks, so nothing is lost.
//
// The patched files are generated from the installed toolchain's own
// sources at build time; when a snippet the patch expects is not found (a
// Go release changed the file) the build stops and says so, and when the
// runtime already handles ENOSYS (the upstream fix landed) the file is left
// as it is. The patch can be dropped once every Go release meshward builds
// with carries the upstream fix, or every Envoy it supports ships cpp-host
// #533 (Envoy ≥ 1.39).
package wasmbuild

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Flags are the go build flags of every module (besides -overlay and -o).
var Flags = []string{"-trimpath", "-buildvcs=false", "-buildmode=c-shared"}

// ErrPatch is returned when the runtime patch does not apply to the
// installed Go toolchain.
var ErrPatch = errors.New("the runtime patch for poll_oneoff does not apply")

// patch is one replacement in a runtime file: old must occur exactly once.
type patch struct {
	file     string // under $GOROOT/src/runtime
	old, new string
}

// fixedUpstream, found in a runtime file, means Go already handles ENOSYS
// there: the file is used as it is.
const fixedUpstream = "_ENOSYS"

var patches = []patch{
	{
		file: "netpoll_wasip1.go",
		old:  "const _EINTR = 27\n",
		new:  "const _EINTR = 27\n\n// WASI errnos of a host without poll_oneoff (meshward, filter/wasmbuild).\nconst (\n\t_ENOSYS  = 52\n\t_ENOTSUP = 58\n)\n",
	},
	{
		file: "netpoll_wasip1.go",
		old: `	if errno != 0 {
		if errno != _EINTR {`,
		new: `	if errno == _ENOSYS || errno == _ENOTSUP {
		// meshward (filter/wasmbuild): a host without poll_oneoff has
		// nothing to report; proxy-wasm-cpp-host before #533 answers so.
		unlock(&mtx)
		return gList{}, 0
	}
	if errno != 0 {
		if errno != _EINTR {`,
	},
	{
		file: "os_wasip1.go",
		old: `	if poll_oneoff(&in, &out, 1, &nevents) != 0 {
		throw("wasi_snapshot_preview1.poll_oneoff")
	}`,
		new: `	// meshward (filter/wasmbuild): a host without poll_oneoff cannot
	// sleep; return at once, as a host that has it does with no timers.
	if e := poll_oneoff(&in, &out, 1, &nevents); e != 0 && e != _ENOSYS && e != _ENOTSUP {
		throw("wasi_snapshot_preview1.poll_oneoff")
	}`,
	},
}

// Overlay writes the patched runtime files under dir (in a subdirectory
// named by their content, so concurrent builds never see a half-written
// file) and returns the path of the -overlay JSON, or "" when the
// toolchain needs no patch. goroot is the toolchain's GOROOT.
func Overlay(dir, goroot string) (string, error) {
	rt := filepath.Join(goroot, "src", "runtime")
	var order []string
	files := map[string][]byte{}
	for _, p := range patches {
		if _, ok := files[p.file]; ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(rt, p.file))
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrPatch, err)
		}
		if bytes.Contains(b, []byte(fixedUpstream)) {
			// The upstream fix has landed in this file.
			continue
		}
		files[p.file] = b
		order = append(order, p.file)
	}
	if len(order) == 0 {
		return "", nil
	}
	for _, p := range patches {
		b, ok := files[p.file]
		if !ok {
			continue
		}
		if n := bytes.Count(b, []byte(p.old)); n != 1 {
			return "", fmt.Errorf("%w: src/runtime/%s of this Go toolchain has the expected snippet %d times, not once (Go's runtime changed: review filter/wasmbuild)", ErrPatch, p.file, n)
		}
		files[p.file] = bytes.Replace(b, []byte(p.old), []byte(p.new), 1)
	}
	h := sha256.New()
	for _, f := range order {
		h.Write([]byte(f))
		h.Write(files[f])
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	out := filepath.Join(abs, hex.EncodeToString(h.Sum(nil))[:16])
	replace := map[string]string{}
	for _, f := range order {
		dst := filepath.Join(out, f)
		if err := writeAtomic(dst, files[f]); err != nil {
			return "", err
		}
		replace[filepath.Join(rt, f)] = dst
	}
	doc, err := json.Marshal(map[string]any{"Replace": replace})
	if err != nil {
		return "", err
	}
	path := filepath.Join(out, "overlay.json")
	return path, writeAtomic(path, doc)
}

// writeAtomic writes b to path by a rename, so a concurrent reader sees the
// old or the new content, never a part.
func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Options say how to build. The zero value builds with the patch, with the
// go command on PATH, keeping the overlay under the system's temporary
// directory.
type Options struct {
	// Go is the go command (default "go").
	Go string
	// OverlayDir is where the patched runtime files go (default
	// $TMPDIR/meshward-wasmbuild).
	OverlayDir string
	// Unpatched builds with Go's runtime as it is: only for the test that
	// shows what the patch fixes.
	Unpatched bool
	// Dir is the directory go build runs in (default the current one).
	Dir string
}

// Build compiles the package pkg to the module out.
func Build(out, pkg string, o Options) error {
	gocmd := o.Go
	if gocmd == "" {
		gocmd = "go"
	}
	args := append([]string{"build"}, Flags...)
	if !o.Unpatched {
		env := exec.Command(gocmd, "env", "GOROOT")
		env.Dir = o.Dir
		root, err := env.Output()
		if err != nil {
			return fmt.Errorf("go env GOROOT: %w", err)
		}
		dir := o.OverlayDir
		if dir == "" {
			dir = filepath.Join(os.TempDir(), "meshward-wasmbuild")
		}
		overlay, err := Overlay(dir, strings.TrimSpace(string(root)))
		if err != nil {
			return err
		}
		if overlay != "" {
			args = append(args, "-overlay", overlay)
		}
	}
	args = append(args, "-o", out, pkg)
	cmd := exec.Command(gocmd, args...)
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}
