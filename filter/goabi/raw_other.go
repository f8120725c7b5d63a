//go:build !wasip1

package goabi

import "github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/internal"

// The raw calls behind raw.go, through the SDK's registered host (its
// emulator in native tests).

func rawHeaderPairs(mapType internal.MapType) ([]byte, internal.Status) {
	var raw *byte
	var n int
	st := internal.ProxyGetHeaderMapPairs(mapType, &raw, &n)
	return bytes(raw, n), st
}

func rawProperty(path []byte) ([]byte, internal.Status) {
	var raw *byte
	var n int
	st := internal.ProxyGetProperty(&path[0], len(path), &raw, &n)
	return bytes(raw, n), st
}

func rawBuffer(bufferType internal.BufferType, start, maxSize int) ([]byte, internal.Status) {
	var raw *byte
	var n int
	st := internal.ProxyGetBufferBytes(bufferType, start, maxSize, &raw, &n)
	return bytes(raw, n), st
}

func rawReplaceHeader(mapType internal.MapType, name, value string) internal.Status {
	return internal.ProxyReplaceHeaderMapValue(mapType, internal.StringBytePtr(name), len(name), internal.StringBytePtr(value), len(value))
}

func rawRecordMetric(id uint32, value uint64) internal.Status {
	return internal.ProxyRecordMetric(id, value)
}

func bytes(raw *byte, n int) []byte {
	if raw == nil {
		return nil
	}
	return internal.RawBytePtrToByteSlice(raw, n)
}

func release1([]byte) {}
