package wasmbuild

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func goroot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// fakeRoot copies the toolchain's two runtime files into a GOROOT of its
// own, after edit.
func fakeRoot(t *testing.T, edit func(file string, b []byte) []byte) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range []string{"netpoll_wasip1.go", "os_wasip1.go"} {
		b, err := os.ReadFile(filepath.Join(goroot(t), "src", "runtime", f))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, "src", "runtime", f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, edit(f, b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// The patch applies to the installed toolchain: both files are replaced,
// each patched where it throws on poll_oneoff's answer.
func TestOverlayPatchesTheInstalledRuntime(t *testing.T) {
	path, err := Overlay(t.TempDir(), goroot(t))
	if err != nil {
		t.Fatal(err)
	}
	if path == "" {
		t.Fatal("no overlay: this toolchain already handles ENOSYS (drop the patch, see the package comment)")
	}
	dir := filepath.Dir(path)
	net, _ := os.ReadFile(filepath.Join(dir, "netpoll_wasip1.go"))
	osf, _ := os.ReadFile(filepath.Join(dir, "os_wasip1.go"))
	if !strings.Contains(string(net), "errno == _ENOSYS || errno == _ENOTSUP") || !strings.Contains(string(osf), "e != _ENOSYS && e != _ENOTSUP") {
		t.Error("patched files lack the ENOSYS handling")
	}
	again, err := Overlay(t.TempDir(), goroot(t))
	if err != nil || filepath.Base(filepath.Dir(again)) != filepath.Base(dir) {
		t.Errorf("a second overlay is named %s, the first %s: the patch is not deterministic", again, path)
	}
}

// A runtime that changed where the patch applies stops the build with a
// message saying so; one that already handles ENOSYS is left alone.
func TestOverlayRefusesAChangedRuntime(t *testing.T) {
	changed := fakeRoot(t, func(f string, b []byte) []byte {
		return []byte(strings.ReplaceAll(string(b), "if errno != _EINTR {", "if errno != _EINTR && errno != 0 {"))
	})
	if _, err := Overlay(t.TempDir(), changed); !errors.Is(err, ErrPatch) || !strings.Contains(err.Error(), "netpoll_wasip1.go") {
		t.Errorf("changed runtime: %v, want ErrPatch naming netpoll_wasip1.go", err)
	}
	fixed := fakeRoot(t, func(f string, b []byte) []byte { return append(b, []byte("\nconst _ENOSYS = 52\n")...) })
	if path, err := Overlay(t.TempDir(), fixed); err != nil || path != "" {
		t.Errorf("runtime with the upstream fix: overlay %q, %v; want none", path, err)
	}
}
