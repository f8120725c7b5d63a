//go:build wasip1

// Command importer is a reactor that imports a WASI function only Envoy
// 1.39's host registers (fd_readdir), for the import check's test.
package main

import "unsafe"

//go:wasmimport wasi_snapshot_preview1 fd_readdir
func fdReaddir(fd int32, buf unsafe.Pointer, n int32, cookie int64, used unsafe.Pointer) int32

//go:wasmexport readdir
func readdir() int32 {
	var buf [64]byte
	var used int32
	return fdReaddir(3, unsafe.Pointer(&buf[0]), 64, 0, unsafe.Pointer(&used))
}

func main() {}
