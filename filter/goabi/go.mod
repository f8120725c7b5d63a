module github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi

go 1.26
