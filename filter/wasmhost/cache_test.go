package wasmhost

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"

	"github.com/meshward/meshward/filter/wasmbuild"
)

func TestCacheDir(t *testing.T) {
	t.Setenv(CacheEnv, "/some/where")
	if got := CacheDir(); got != "/some/where" {
		t.Errorf("%s=/some/where: CacheDir() = %q", CacheEnv, got)
	}
	t.Setenv(CacheEnv, "off")
	if got := CacheDir(); got != "" {
		t.Errorf("%s=off: CacheDir() = %q, want no cache", CacheEnv, got)
	}
	t.Setenv(CacheEnv, "")
	// A test binary carries no module information: it cannot tell its
	// wazero's version, so it keeps no cache on disk unless told where.
	if got := CacheDir(); got != "" {
		t.Errorf("%s empty, in a binary without module information: CacheDir() = %q, want no cache", CacheEnv, got)
	}
}

// TestCacheOutlivesTheProcess: a process that loads a module leaves its
// machine code in the cache directory, and the next process runs from it.
func TestCacheOutlivesTheProcess(t *testing.T) {
	if path := os.Getenv("MESHWARD_CACHE_CHILD"); path != "" {
		vm, err := LoadDirect(path, wazerohost.Envoy133)
		if err != nil {
			t.Fatal(err)
		}
		vm.Close()
		return
	}
	wasm := filepath.Join(t.TempDir(), "passthrough.wasm")
	if p := os.Getenv("MESHWARD_PASSTHROUGH_WASM"); p != "" {
		wasm = p
	} else if err := wasmbuild.Build(wasm, "../internal/passthrough", wasmbuild.Options{}); err != nil {
		t.Fatalf("building the passthrough module: %v", err)
	}
	dir := t.TempDir()
	entries := func() []os.FileInfo {
		t.Helper()
		var all []os.FileInfo
		err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				fi, err := d.Info()
				all = append(all, fi)
				return err
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return all
	}
	var first os.FileInfo
	for run := range 2 {
		child := exec.Command(os.Args[0], "-test.run=^TestCacheOutlivesTheProcess$", "-test.count=1")
		child.Env = append(os.Environ(), "MESHWARD_CACHE_CHILD="+wasm, CacheEnv+"="+dir)
		if out, err := child.CombinedOutput(); err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, out)
		}
		e := entries()
		if len(e) != 1 {
			t.Fatalf("after run %d the cache holds %d entries, want the one compiled module", run, len(e))
		}
		if first == nil {
			first = e[0]
		} else if !os.SameFile(first, e[0]) {
			t.Error("the second process compiled the module again (its entry was replaced) instead of running the cached one")
		}
	}
}
