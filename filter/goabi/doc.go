// Package goabi lets a proxy-wasm plugin written against
// github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0 be compiled by the upstream
// Go toolchain (GOOS=wasip1 GOARCH=wasm -buildmode=c-shared) instead of TinyGo.
//
// The SDK declares its host calls with TinyGo's //export and only offers a
// pluggable host (internal.RegisterMockWasmHost) to other compilers. On
// wasip1 this package registers a host whose methods call the real proxy_*
// imports of the proxy-wasm ABI (v0.2.1) and exports every proxy_on_*
// callback, delegating to the SDK's internal dispatchers. On every other
// platform it is empty, so native tests use the SDK's emulator unchanged.
//
// Its import path lies under the SDK's module path only so that Go's internal
// rule lets it import proxywasm/internal; it is a separate module of ours,
// wired in with a replace directive in meshward's go.mod.
//
// Import it for its side effects:
//
//	import _ "github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi"
package goabi
