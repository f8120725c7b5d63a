// Command filter is meshward's proxy-wasm HTTP filter. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o build/meshward.wasm ./filter
//
// A c-shared module never runs main; init registers the VM context.
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	_ "github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi"
)

func init() { proxywasm.SetVMContext(&vmContext{}) }

func main() {}
