//go:build !wasip1

package wazerohost

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// buildModule compiles one of testdata's reactors for wasip1.
func buildModule(t *testing.T, name string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+".wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "./testdata/"+name)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A module importing a WASI function its host lacks is refused at load,
// naming the function, as Envoy refuses it; the host that has it loads it.
func TestMissingImportIsRefused(t *testing.T) {
	wasm := buildModule(t, "importer")
	missing, err := Envoy133.MissingImports(wasm)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"wasi_snapshot_preview1.fd_readdir"}; !reflect.DeepEqual(missing, want) {
		t.Errorf("missing on envoy-1.33: %v, want %v", missing, want)
	}
	if missing, err := Envoy139.MissingImports(wasm); err != nil || len(missing) != 0 {
		t.Errorf("missing on envoy-1.39: %v, %v; want none", missing, err)
	}
	_, err = NewStandalone(wasm, nil, nil, Envoy133)
	if !errors.Is(err, ErrMissingImport) || !strings.Contains(err.Error(), "wasi_snapshot_preview1.fd_readdir") {
		t.Errorf("loading on envoy-1.33: %v, want a refusal naming wasi_snapshot_preview1.fd_readdir", err)
	}
}

// A host call Envoy does not allow while the module initialises fails the
// VM's start on the Envoy profiles; wazero's lenient WASI lets it pass
// (which is why it proves nothing about Envoy).
func TestRestrictedCallAtStartFailsTheVM(t *testing.T) {
	wasm := buildModule(t, "yieldatstart")
	for _, p := range Profiles {
		_, err := NewStandalone(wasm, nil, nil, p)
		if err == nil || !strings.Contains(err.Error(), "restricted_callback") || !strings.Contains(err.Error(), "sched_yield") {
			t.Errorf("%s: %v, want the start refused with restricted_callback naming sched_yield", p, err)
		}
	}
	// On wazero's WASI it starts; it is then refused only for not being a
	// proxy-wasm module.
	_, err := NewStandalone(wasm, nil, nil, Wazero)
	if err == nil || strings.Contains(err.Error(), "restricted_callback") || !strings.Contains(err.Error(), "proxy-wasm exports") {
		t.Errorf("wazero profile: %v, want it started and refused only for lacking proxy-wasm exports", err)
	}
}

// Each profile registers what its cpp-host generation does: the older lacks
// the functions #533 added, both have Go's three (sched_yield, poll_oneoff,
// fd_fdstat_set_flags).
func TestProfileExports(t *testing.T) {
	old, cur := Envoy133.Exports(), Envoy139.Exports()
	if len(old) != 18 || len(cur) != 45 {
		t.Errorf("envoy-1.33 registers %d functions (want 18), envoy-1.39 %d (want 45)", len(old), len(cur))
	}
	has := func(list []string, name string) bool {
		for _, n := range list {
			if n == name {
				return true
			}
		}
		return false
	}
	for _, n := range []string{"sched_yield", "poll_oneoff", "fd_fdstat_set_flags", "fd_write", "clock_time_get"} {
		if !has(old, n) || !has(cur, n) {
			t.Errorf("%s missing from a profile", n)
		}
	}
	for _, n := range []string{"fd_readdir", "clock_res_get", "sock_accept", "path_filestat_get"} {
		if has(old, n) || !has(cur, n) {
			t.Errorf("%s: envoy-1.33 has it %v, envoy-1.39 %v; want false, true", n, has(old, n), has(cur, n))
		}
	}
	if _, err := ParseProfile("envoy-1.32"); err == nil {
		t.Error("envoy-1.32 parsed: a Go module cannot load there")
	}
}
