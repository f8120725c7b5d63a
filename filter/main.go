// Command filter is meshward's proxy-wasm HTTP filter. Build it with
//
//	make wasm
//
// (filter/wasmbuild: GOOS=wasip1 GOARCH=wasm -buildmode=c-shared, with Go's
// runtime patched for Envoy 1.33-1.38). The filter itself is package
// filter/plugin; a c-shared module never runs main, so init registers the
// VM context.
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	_ "github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi"

	"github.com/meshward/meshward/filter/plugin"
)

func init() { proxywasm.SetVMContext(plugin.NewVMContext()) }

func main() {}
