// Package wordeq compares byte strings without Go's string comparison where
// that is slow: compiled to WebAssembly, `a == b` is a call to
// runtime.memequal, which calls memeqbody, a loop over single bytes
// (internal/bytealg/equal_wasm.s). The filter confirms several learned keys
// and header names per request, so there it compares eight bytes per load in
// one leaf function; natively Go's comparison, which is vectorised, is used.
package wordeq

import (
	"runtime"
	"unsafe"
)

// Equal reports whether a and b hold the same bytes.
func Equal(a, b string) bool {
	if runtime.GOARCH == "wasm" {
		// The lengths are compared inline: most comparisons end there.
		return len(a) == len(b) && Words(a, b)
	}
	return a == b
}

// Words is Equal by loads of eight bytes, the last eight overlapping the
// others, or of four when shorter, on every architecture (what Equal does in
// wasm, so that it is tested natively too). It calls nothing, not even a
// bounds check's panic: compiled to WebAssembly, a leaf function is the
// cheaper call.
func Words(a, b string) bool {
	n := len(a)
	if n != len(b) {
		return false
	}
	switch {
	case n >= 8:
		for i := 0; i < n-8; i += 8 {
			if load64(a, i) != load64(b, i) {
				return false
			}
		}
		return load64(a, n-8) == load64(b, n-8)
	case n >= 4:
		return load32(a, 0) == load32(b, 0) && load32(a, n-4) == load32(b, n-4)
	case n == 0:
		return true
	}
	// One to three bytes: 0, n/2 and n-1 are all of them.
	return load8(a, 0) == load8(b, 0) && load8(a, n/2) == load8(b, n/2) && load8(a, n-1) == load8(b, n-1)
}

// The loads read s at i, which the caller keeps within s; byte order does
// not matter, as words are only compared.
func load64(s string, i int) uint64 {
	return *(*uint64)(unsafe.Add(unsafe.Pointer(unsafe.StringData(s)), i))
}

func load32(s string, i int) uint32 {
	return *(*uint32)(unsafe.Add(unsafe.Pointer(unsafe.StringData(s)), i))
}

func load8(s string, i int) byte {
	return *(*byte)(unsafe.Add(unsafe.Pointer(unsafe.StringData(s)), i))
}
