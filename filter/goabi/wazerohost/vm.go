//go:build !wasip1

// Package wazerohost runs a compiled proxy-wasm module (a Go c-shared
// reactor) on wazero and connects it to the SDK's host emulator, like
// proxytest.NewWasmVMContext but lean enough to measure a plugin with: host
// functions are plain api.GoModuleFunc (no reflection per call), the guest's
// proxy_on_memory_allocate is looked up once instead of once per copied
// buffer, the module is initialised through its own _initialize, and a
// finished stream is deleted in the guest (proxy_on_done, proxy_on_delete),
// as Envoy does, so a long run does not accumulate dead contexts.
//
// It lives in goabi's module because only a package under the SDK's import
// path may use the SDK's internal dispatchers.
package wazerohost

import (
	"context"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/internal"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// VM is a compiled module ready to be driven by proxytest's HostEmulator
// (pass it to EmulatorOption.WithVMContext). It is not safe for concurrent
// use: one VM, one emulator at a time, as in a proxy worker thread.
type VM struct {
	ctx     context.Context
	runtime wazero.Runtime
	mod     api.Module
	stack   []uint64 // arguments and results of guest calls from the host
	fns     guestFns
	rootID  uint32
	guard   callGuard
}

type guestFns struct {
	alloc, vmStart, contextCreate, configure, done, delete, log, tick, queueReady,
	reqHeaders, reqBody, reqTrailers, respHeaders, respBody, respTrailers, httpCallResponse api.Function
}

var _ types.VMContext = (*VM)(nil)

// New compiles and instantiates a c-shared proxy-wasm module on a host
// whose WASI answers as the profile says.
func New(wasm []byte, p Profile) (*VM, error) {
	return NewWithCache(wasm, nil, p)
}

// NewWithCache is New taking the compiled module from cache when it holds
// it (and leaving it there when it does not): compiling a large module costs
// seconds, instantiating a compiled one milliseconds. A nil cache compiles.
func NewWithCache(wasm []byte, cache wazero.CompilationCache, p Profile) (*VM, error) {
	ctx := context.Background()
	vm := &VM{ctx: ctx, stack: make([]uint64, 8), guard: callGuard{gen: restrictedGen(p)}}
	rc := wazero.NewRuntimeConfig()
	if cache != nil {
		rc = rc.WithCompilationCache(cache)
	}
	vm.runtime = wazero.NewRuntimeWithConfig(ctx, rc)
	wh := &wasiHost{guard: &vm.guard, log: func(level logLevel, msg string) {
		b := []byte(msg)
		if len(b) > 0 {
			internal.ProxyLog(internal.LogLevel(level), &b[0], len(b))
		}
	}}
	if err := instantiateWASI(ctx, vm.runtime, p, wh); err != nil {
		vm.runtime.Close(ctx)
		return nil, err
	}
	if err := vm.exportHost(ctx); err != nil {
		vm.runtime.Close(ctx)
		return nil, err
	}
	compiled, err := compile(ctx, vm.runtime, wasm, p)
	if err != nil {
		vm.runtime.Close(ctx)
		return nil, err
	}
	if _, ok := compiled.ExportedFunctions()["_initialize"]; !ok {
		vm.runtime.Close(ctx)
		return nil, errors.New("module does not export _initialize (build it with -buildmode=c-shared)")
	}
	// The host's clocks, as Envoy gives them: wazero's default is a fake
	// clock fixed at 2022, which would date every shipped record then.
	cfg := wazero.NewModuleConfig().WithStartFunctions("_initialize").WithStderr(nopWriter{}).WithStdout(nopWriter{}).
		WithSysWalltime().WithSysNanotime()
	vm.guard.phase = phaseStarting
	vm.mod, err = vm.runtime.InstantiateModule(withMemory(ctx), compiled, cfg)
	vm.guard.phase = phaseRunning
	if err != nil {
		vm.runtime.Close(ctx)
		return nil, err
	}
	vm.fns = lookupGuestFns(vm.mod)
	if vm.fns.alloc == nil || vm.fns.contextCreate == nil || vm.fns.configure == nil {
		vm.runtime.Close(ctx)
		return nil, errors.New("module lacks the proxy-wasm exports proxy_on_memory_allocate, proxy_on_context_create or proxy_on_configure")
	}
	return vm, nil
}

// lookupGuestFns finds the proxy-wasm callbacks a module exports (nil for
// those it lacks).
func lookupGuestFns(mod api.Module) guestFns {
	f := mod.ExportedFunction
	return guestFns{
		alloc: f("proxy_on_memory_allocate"), vmStart: f("proxy_on_vm_start"), contextCreate: f("proxy_on_context_create"),
		configure: f("proxy_on_configure"), done: f("proxy_on_done"), delete: f("proxy_on_delete"), log: f("proxy_on_log"),
		tick: f("proxy_on_tick"), queueReady: f("proxy_on_queue_ready"),
		reqHeaders: f("proxy_on_request_headers"), reqBody: f("proxy_on_request_body"), reqTrailers: f("proxy_on_request_trailers"),
		respHeaders: f("proxy_on_response_headers"), respBody: f("proxy_on_response_body"), respTrailers: f("proxy_on_response_trailers"),
		httpCallResponse: f("proxy_on_http_call_response"),
	}
}

// Close releases the runtime.
func (vm *VM) Close() error { return vm.runtime.Close(vm.ctx) }

// MemoryBytes returns the size of the module's linear memory.
func (vm *VM) MemoryBytes() uint64 { return uint64(vm.mod.Memory().Size()) }

// call invokes a guest export with up to 5 arguments and returns its first
// result (0 when it has none). A trap is a bug in the guest or this binding
// and panics, as in proxytest.
func (vm *VM) call(fn api.Function, args ...uint64) uint64 {
	if fn == nil {
		return 0
	}
	// Reentrant use is safe: wazero reads the arguments before running the
	// guest and writes the results after it returns.
	stack := vm.stack
	copy(stack, args)
	if err := fn.CallWithStack(vm.ctx, stack); err != nil {
		panic(fmt.Sprintf("wasm trap: %v", err))
	}
	return stack[0]
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// OnVMStart implements types.VMContext.
func (vm *VM) OnVMStart(size int) types.OnVMStartStatus {
	return vm.call(vm.fns.vmStart, 0, uint64(size)) == 1
}

// NewPluginContext implements types.VMContext.
func (vm *VM) NewPluginContext(id uint32) types.PluginContext {
	vm.rootID = id
	vm.call(vm.fns.contextCreate, uint64(id), 0)
	return &pluginContext{vm: vm, id: id}
}

type pluginContext struct {
	vm *VM
	id uint32
}

func (p *pluginContext) OnPluginStart(size int) types.OnPluginStartStatus {
	return p.vm.call(p.vm.fns.configure, uint64(p.id), uint64(size)) == 1
}
func (p *pluginContext) OnPluginDone() bool { return p.vm.call(p.vm.fns.done, uint64(p.id)) == 1 }
func (p *pluginContext) OnQueueReady(q uint32) {
	p.vm.call(p.vm.fns.queueReady, uint64(p.id), uint64(q))
}
func (p *pluginContext) OnTick()                               { p.vm.call(p.vm.fns.tick, uint64(p.id)) }
func (p *pluginContext) NewTcpContext(uint32) types.TcpContext { return nil }
func (p *pluginContext) NewHttpContext(id uint32) types.HttpContext {
	p.vm.call(p.vm.fns.contextCreate, uint64(id), uint64(p.id))
	return &httpContext{vm: p.vm, id: uint64(id)}
}

type httpContext struct {
	vm *VM
	id uint64
}

func (h *httpContext) OnHttpRequestHeaders(n int, eos bool) types.Action {
	return types.Action(h.vm.call(h.vm.fns.reqHeaders, h.id, uint64(n), b2u(eos)))
}
func (h *httpContext) OnHttpRequestBody(n int, eos bool) types.Action {
	return types.Action(h.vm.call(h.vm.fns.reqBody, h.id, uint64(n), b2u(eos)))
}
func (h *httpContext) OnHttpRequestTrailers(n int) types.Action {
	return types.Action(h.vm.call(h.vm.fns.reqTrailers, h.id, uint64(n)))
}
func (h *httpContext) OnHttpResponseHeaders(n int, eos bool) types.Action {
	return types.Action(h.vm.call(h.vm.fns.respHeaders, h.id, uint64(n), b2u(eos)))
}
func (h *httpContext) OnHttpResponseBody(n int, eos bool) types.Action {
	return types.Action(h.vm.call(h.vm.fns.respBody, h.id, uint64(n), b2u(eos)))
}
func (h *httpContext) OnHttpResponseTrailers(n int) types.Action {
	return types.Action(h.vm.call(h.vm.fns.respTrailers, h.id, uint64(n)))
}

// OnHttpStreamDone ends the stream as Envoy does: log, done, delete.
func (h *httpContext) OnHttpStreamDone() {
	h.vm.call(h.vm.fns.log, h.id)
	h.vm.call(h.vm.fns.done, h.id)
	h.vm.call(h.vm.fns.delete, h.id)
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
