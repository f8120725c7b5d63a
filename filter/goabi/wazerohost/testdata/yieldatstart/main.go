//go:build wasip1

// Command yieldatstart is a reactor whose initialisation calls sched_yield,
// which Envoy's host does not allow during _initialize.
package main

//go:wasmimport wasi_snapshot_preview1 sched_yield
func schedYield() int32

var yielded = schedYield()

//go:wasmexport yielded
func result() int32 { return yielded }

func main() {}
