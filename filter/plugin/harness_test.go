package plugin

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/meshward/meshward/filter/wasmbuild"
	"github.com/meshward/meshward/filter/wasmhost"
)

// wasmPath is the compiled filter every "wasm" subtest runs: $MESHWARD_WASM
// (make test points it at build/meshward.wasm), else a fresh build of this
// package made once by TestMain.
var wasmPath string

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "filter tests:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	wasmPath = os.Getenv("MESHWARD_WASM")
	if wasmPath == "" {
		dir, err := os.MkdirTemp("", "meshward-filter-test")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		wasmPath = filepath.Join(dir, "meshward.wasm")
		if err := buildWasm(wasmPath, ".."); err != nil {
			return 0, err
		}
	}
	if _, err := os.Stat(wasmPath); err != nil {
		return 0, fmt.Errorf("compiled filter not found (run make wasm): %w", err)
	}
	return m.Run(), nil
}

// buildWasm compiles a package exactly as the Makefile does (wasmbuild).
func buildWasm(out, pkg string) error { return wasmbuild.Build(out, pkg, wasmbuild.Options{}) }

// env is one way of running the filter: natively, or as the compiled .wasm.
type env struct {
	name  string
	newVM func(t testing.TB) types.VMContext
}

// envs are the ways every filter test runs: natively; as the compiled .wasm
// on goabi's lean wazero binding under each Envoy host profile (WASI answered
// exactly as that Envoy's proxy-wasm-cpp-host answers it, with its start-up
// and allocation restrictions); and under proxytest's own wazero wrapper,
// the SDK's reference binding, which checks that goabi's binding behaves as
// the SDK's does. That last one runs on wazero's full WASI, kinder than any
// Envoy: it proves nothing about Envoy, which the profiles do.
var envs = append([]env{{"native", func(testing.TB) types.VMContext { return &vmContext{} }}}, append(profileEnvs(), env{"wasm-sdk", sharedWasmVM})...)

// profileEnvs is one env per Envoy host profile, each with its own VM.
func profileEnvs() []env {
	var out []env
	for _, p := range wazerohost.Profiles {
		out = append(out, env{"wasm-" + string(p), sharedVM(func(path string) (types.VMContext, error) { return wasmhost.LoadDirect(path, p) })})
	}
	return out
}

// sharedVM returns a loader of one VM instance that every test shares.
// Compiling the filter takes about a second; like Envoy, which keeps a VM
// across configuration updates, each test starts a fresh plugin context in
// it (the emulator creates the root context anew), so no plugin state leaks
// between tests.
func sharedVM(load func(path string) (types.VMContext, error)) func(testing.TB) types.VMContext {
	var once sync.Once
	var vm types.VMContext
	var err error
	return func(t testing.TB) types.VMContext {
		once.Do(func() { vm, err = load(wasmPath) })
		if err != nil {
			t.Fatalf("loading the compiled filter: %v", err)
		}
		return vm
	}
}

// sharedWasmVM is the compiled filter under proxytest's wazero wrapper.
var sharedWasmVM = sharedVM(func(p string) (types.VMContext, error) { return wasmhost.LoadVM(p) })

// forEachEnv runs a filter test natively and against the compiled .wasm
// under the SDK's host emulator (proxytest's wazero wrapper, and goabi's lean
// one). Every filter test goes through it.
func forEachEnv(t *testing.T, fn func(t *testing.T, e env)) {
	t.Helper()
	for _, e := range envs {
		t.Run(e.name, func(t *testing.T) { fn(t, e) })
	}
}

// hostOpts is what a test sets up in the emulated proxy.
type hostOpts struct {
	config []byte
	props  map[string]string // property path joined by '/' → value
}

// start creates an emulator around the VM and starts the plugin.
func (e env) start(t testing.TB, o hostOpts) (proxytest.HostEmulator, types.OnPluginStartStatus) {
	t.Helper()
	opt := proxytest.NewEmulatorOption().WithVMContext(e.newVM(t)).WithPluginConfiguration(o.config)
	for k, v := range o.props {
		opt = opt.WithProperty(strings.Split(k, "/"), []byte(v))
	}
	host, reset := proxytest.NewHostEmulator(opt)
	t.Cleanup(reset)
	return host, host.StartPlugin()
}

// mustStart is start for tests that need a running plugin.
func (e env) mustStart(t testing.TB, o hostOpts) proxytest.HostEmulator {
	t.Helper()
	host, st := e.start(t, o)
	if st != types.OnPluginStartStatusOK {
		t.Fatalf("plugin refused its configuration: %v", host.GetCriticalLogs())
	}
	return host
}

// setPluginConfig replaces the configuration the emulator will hand out on
// the next StartPlugin, as Envoy does on a configuration update. The SDK's
// emulator fixes it at creation and offers no setter, so this reaches into
// its one field; it is test-only and fails loudly if the SDK changes shape.
func setPluginConfig(t testing.TB, host proxytest.HostEmulator, data []byte) {
	t.Helper()
	v := reflect.ValueOf(host)
	if v.Kind() != reflect.Pointer {
		t.Fatalf("emulator is a %v, not a pointer", v.Kind())
	}
	root := v.Elem().FieldByName("rootHostEmulator")
	if !root.IsValid() || root.Kind() != reflect.Pointer {
		t.Fatal("proxytest's emulator changed shape: no *rootHostEmulator")
	}
	f := root.Elem().FieldByName("pluginConfiguration")
	if !f.IsValid() || f.Type() != reflect.TypeOf([]byte(nil)) {
		t.Fatal("proxytest's emulator changed shape: no pluginConfiguration []byte")
	}
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(data))
}

// request sends one body-less request's headers through the filter; it
// returns the action and the stream's id.
func request(host proxytest.HostEmulator, headers [][2]string) (types.Action, uint32) {
	id := host.InitializeHttpContext()
	action := host.CallOnRequestHeaders(id, headers, true)
	return action, id
}

// requestWithBody sends headers, then the body in the given chunks; it
// returns the action taken on the headers, on the last chunk, and the id.
func requestWithBody(host proxytest.HostEmulator, headers [][2]string, chunks ...string) (types.Action, types.Action, uint32) {
	id := host.InitializeHttpContext()
	onHeaders := host.CallOnRequestHeaders(id, headers, false)
	var onBody types.Action
	for i, c := range chunks {
		onBody = host.CallOnRequestBody(id, []byte(c), i == len(chunks)-1)
	}
	return onHeaders, onBody, id
}

// counter reads a counter after a tick: the filter flushes its request
// count on every tick, as Envoy would see it.
func counter(t testing.TB, host proxytest.HostEmulator, name string) uint64 {
	t.Helper()
	host.Tick()
	v, err := host.GetCounterMetric(name)
	if err != nil {
		t.Fatalf("metric %s: %v", name, err)
	}
	return v
}

func header(hs [][2]string, name string) (string, bool) {
	for _, h := range hs {
		if h[0] == name {
			return h[1], true
		}
	}
	return "", false
}
