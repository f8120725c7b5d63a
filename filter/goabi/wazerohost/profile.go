//go:build !wasip1

package wazerohost

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/tetratelabs/wazero"
)

// Profile names a host's WASI: which wasi_snapshot_preview1 functions it
// registers, how each answers, and which host calls it allows while the
// module initialises. A module is only proven against a host as strict as
// the one that will run it: wazero's full WASI answers calls Envoy's host
// refuses (poll_oneoff above all, on which Go's runtime throws).
type Profile string

const (
	// Envoy133 answers as proxy-wasm-cpp-host does from commit c4d7bb0
	// (PR #427) to the one before 94091cd: the host of Envoy 1.33 up to
	// 1.38. poll_oneoff and fd_fdstat_set_flags exist but answer ENOSYS.
	Envoy133 Profile = "envoy-1.33"
	// Envoy139 answers as proxy-wasm-cpp-host does from commit 94091cd
	// (PR #533), taken into Envoy by envoyproxy/envoy#45756: Envoy 1.39 on.
	// poll_oneoff reports no events, and about 25 more WASI functions
	// exist, most answering ENOTSUP.
	Envoy139 Profile = "envoy-1.39"
	// Wazero is wazero's full WASI with no start-up restrictions: kinder
	// than any Envoy. Only for tests that say why they need it.
	Wazero Profile = "wazero"
)

// Profiles lists the Envoy host profiles the filter must pass, oldest first.
var Profiles = []Profile{Envoy133, Envoy139}

// DefaultProfile is the profile New and NewStandalone use: the oldest Envoy
// host meshward supports, the strictest.
const DefaultProfile = Envoy133

// ParseProfile returns the profile with the given name.
func ParseProfile(name string) (Profile, error) {
	for _, p := range append(Profiles[:len(Profiles):len(Profiles)], Wazero) {
		if string(p) == name {
			return p, nil
		}
	}
	names := make([]string, 0, len(Profiles)+1)
	for _, p := range Profiles {
		names = append(names, string(p))
	}
	return "", fmt.Errorf("unknown host profile %q (known: %s, %s)", name, strings.Join(names, ", "), Wazero)
}

// Exports returns the names of the WASI functions the profile registers
// (module wasi_snapshot_preview1; cpp-host registers the same under
// wasi_unstable), sorted. Wazero's is wazero's whole preview1 module.
func (p Profile) Exports() []string {
	var out []string
	for _, f := range wasiFunctions {
		if p == Wazero || f.since <= p.generation() {
			out = append(out, f.name)
		}
	}
	return out
}

// generation is the cpp-host generation a profile mirrors: 1 for c4d7bb0,
// 2 for 94091cd.
func (p Profile) generation() int {
	switch p {
	case Envoy133:
		return gen427
	case Envoy139, Wazero:
		return gen533
	}
	return 0
}

// The cpp-host generations, by the PR that made each.
const (
	gen427 = 1 // c4d7bb0: Go's wasip1 imports exist, poll_oneoff is ENOSYS
	gen533 = 2 // 94091cd: poll_oneoff answers, more WASI functions
)

// restrictedGen is the generation whose start-up restrictions a profile
// enforces (0: none).
func restrictedGen(p Profile) int {
	if p == Wazero {
		return 0
	}
	return p.generation()
}

// envExports is what module "env" of both bindings exports: the proxy-wasm
// ABI v0.2.1.
var envExports = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range []string{"proxy_log", "proxy_set_property", "proxy_get_property", "proxy_send_local_response",
		"proxy_get_shared_data", "proxy_set_shared_data", "proxy_register_shared_queue", "proxy_resolve_shared_queue",
		"proxy_dequeue_shared_queue", "proxy_enqueue_shared_queue", "proxy_get_header_map_value",
		"proxy_add_header_map_value", "proxy_replace_header_map_value", "proxy_remove_header_map_value",
		"proxy_get_header_map_pairs", "proxy_set_header_map_pairs", "proxy_get_buffer_bytes", "proxy_set_buffer_bytes",
		"proxy_continue_stream", "proxy_close_stream", "proxy_http_call", "proxy_call_foreign_function",
		"proxy_set_tick_period_milliseconds", "proxy_set_effective_context", "proxy_done", "proxy_define_metric",
		"proxy_increment_metric", "proxy_record_metric", "proxy_get_metric"} {
		m[n] = true
	}
	return m
}()

// MissingImports returns the functions a module imports that a host of
// this profile does not register, as "module.name", sorted; Envoy refuses
// to load such a module ("Failed to load Wasm module due to a missing
// import: wasi_snapshot_preview1.NAME").
func (p Profile) MissingImports(wasm []byte) ([]string, error) {
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	compiled, err := r.CompileModule(ctx, wasm)
	if err != nil {
		return nil, err
	}
	return p.missing(compiled), nil
}

func (p Profile) missing(compiled wazero.CompiledModule) []string {
	wasi := map[string]bool{}
	for _, n := range p.Exports() {
		wasi[n] = true
	}
	var out []string
	for _, f := range compiled.ImportedFunctions() {
		module, name, _ := f.Import()
		ok := false
		switch module {
		case "env":
			ok = envExports[name]
		case "wasi_snapshot_preview1", "wasi_unstable":
			ok = wasi[name]
		}
		if !ok {
			out = append(out, module+"."+name)
		}
	}
	sort.Strings(out)
	return out
}

// compile compiles a module and refuses it, as Envoy does, when it imports
// a function the profile's host lacks.
func compile(ctx context.Context, r wazero.Runtime, wasm []byte, p Profile) (wazero.CompiledModule, error) {
	compiled, err := r.CompileModule(ctx, wasm)
	if err != nil {
		return nil, err
	}
	if missing := p.missing(compiled); len(missing) > 0 {
		compiled.Close(ctx)
		return nil, fmt.Errorf("%w (host profile %s): %s", ErrMissingImport, p, strings.Join(missing, ", "))
	}
	return compiled, nil
}

// ErrMissingImport is returned for a module that imports a function its
// host profile does not register.
var ErrMissingImport = errors.New("failed to load Wasm module due to a missing import")
