package wasmhost

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"

	"github.com/tetratelabs/wazero"
)

// CacheEnv names the environment variable that places the compilation
// cache: a directory, or "off" to compile in memory only. Unset, the cache
// lives in the user's cache directory (os.UserCacheDir), as Go's build cache
// does, in binaries that know which wazero they carry (see CacheDir).
const CacheEnv = "MESHWARD_WASM_CACHE"

var (
	cacheOnce sync.Once
	cache     wazero.CompilationCache
)

// CompilationCache is the process's one wazero compilation cache, shared
// by every VM it starts. Compiling the filter to machine code takes seconds
// (about 3 s on a small machine) and instantiating the compiled module
// milliseconds, so the cache is kept on disk, where the next process finds
// it: wazero keys each entry by the module's SHA-256, its own version and
// the CPU's features, writes it by rename and checks a checksum on reading,
// so a stale or torn entry is compiled again, never run. When the directory
// cannot be made, the cache is in memory, for this process only.
func CompilationCache() wazero.CompilationCache {
	cacheOnce.Do(func() {
		if dir := CacheDir(); dir != "" {
			if err := os.MkdirAll(dir, 0o700); err == nil {
				if c, err := wazero.NewCompilationCacheWithDir(dir); err == nil {
					cache = c
					return
				}
			}
		}
		cache = wazero.NewCompilationCache()
	})
	return cache
}

// CacheDir is where CompilationCache keeps compiled modules, or "" when
// the cache is off, there is no user cache directory, or the binary cannot
// tell its wazero's version. wazero files its entries under that version,
// and a binary without module information (a test binary) reads it as
// "dev": two wazero releases would share entries and one could load the
// other's machine code. Such a binary caches on disk only where $CacheEnv
// says (make test names a directory per wazero version).
func CacheDir() string {
	if d, ok := os.LookupEnv(CacheEnv); ok && d != "" {
		if d == "off" {
			return ""
		}
		return d
	}
	if !wazeroVersionKnown() {
		return ""
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "meshward", "wazero")
}

// wazeroVersionKnown reports whether the build information names the wazero
// module's version, as wazero itself reads it.
func wazeroVersionKnown() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/tetratelabs/wazero" {
			return d.Version != "" && d.Version != "(devel)"
		}
	}
	return false
}
