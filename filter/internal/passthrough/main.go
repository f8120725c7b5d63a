// Command passthrough is a proxy-wasm HTTP plugin that does nothing, built the
// same way as the meshward filter. Benchmarks run it beside the filter so
// that the filter's own cost per request is visible apart from the ABI's.
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	_ "github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

func init() { proxywasm.SetVMContext(&vm{}) }

func main() {}

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &stream{} }

type stream struct{ types.DefaultHttpContext }

// OnHttpRequestHeaders reads the headers, as any real filter must, and lets
// the request through.
func (*stream) OnHttpRequestHeaders(int, bool) types.Action {
	_, _ = proxywasm.GetHttpRequestHeaders()
	return types.ActionContinue
}
