module github.com/meshward/meshward

go 1.26

require (
	github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0
	github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi v0.0.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/tetratelabs/wazero v1.12.0 // indirect
	golang.org/x/sys v0.44.0 // indirect
)

// The filter is compiled by upstream Go, not TinyGo: goabi supplies the ABI
// glue the SDK lacks for that (see filter/goabi/doc.go).
replace github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi => ./filter/goabi
