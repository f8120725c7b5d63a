module github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi

go 1.26

require github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0
