//go:build wasip1

package goabi

import (
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/internal"
)

// The host functions of the proxy-wasm ABI v0.2.1, imported from module "env".
// Every pointer and size is an i32 in the ABI; Go's int and pointers are
// 64-bit on wasm, so sizes travel as uint32 and the host writes results into
// uint32 out-slots that wasmHost converts afterwards.

//go:wasmimport env proxy_log
func proxyLog(level uint32, msg unsafe.Pointer, msgSize uint32) uint32

//go:wasmimport env proxy_set_property
func proxySetProperty(path unsafe.Pointer, pathSize uint32, value unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_get_property
func proxyGetProperty(path unsafe.Pointer, pathSize uint32, retData *uint32, retSize *uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, details unsafe.Pointer, detailsSize uint32, body unsafe.Pointer, bodySize uint32, headers unsafe.Pointer, headersSize uint32, grpcStatus int32) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key unsafe.Pointer, keySize uint32, retData *uint32, retSize *uint32, retCas *uint32) uint32

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32, cas uint32) uint32

//go:wasmimport env proxy_register_shared_queue
func proxyRegisterSharedQueue(name unsafe.Pointer, nameSize uint32, retID *uint32) uint32

//go:wasmimport env proxy_resolve_shared_queue
func proxyResolveSharedQueue(vmID unsafe.Pointer, vmIDSize uint32, name unsafe.Pointer, nameSize uint32, retID *uint32) uint32

//go:wasmimport env proxy_dequeue_shared_queue
func proxyDequeueSharedQueue(queueID uint32, retData *uint32, retSize *uint32) uint32

//go:wasmimport env proxy_enqueue_shared_queue
func proxyEnqueueSharedQueue(queueID uint32, value unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, retData *uint32, retSize *uint32) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxyRemoveHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxyGetHeaderMapPairs(mapType uint32, retData *uint32, retSize *uint32) uint32

//go:wasmimport env proxy_set_header_map_pairs
func proxySetHeaderMapPairs(mapType uint32, data unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(bufferType uint32, start uint32, maxSize uint32, retData *uint32, retSize *uint32) uint32

//go:wasmimport env proxy_set_buffer_bytes
func proxySetBufferBytes(bufferType uint32, start uint32, maxSize uint32, data unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_continue_stream
func proxyContinueStream(streamType uint32) uint32

//go:wasmimport env proxy_close_stream
func proxyCloseStream(streamType uint32) uint32

//go:wasmimport env proxy_http_call
func proxyHttpCall(upstream unsafe.Pointer, upstreamSize uint32, headers unsafe.Pointer, headersSize uint32, body unsafe.Pointer, bodySize uint32, trailers unsafe.Pointer, trailersSize uint32, timeoutMs uint32, retCalloutID *uint32) uint32

//go:wasmimport env proxy_call_foreign_function
func proxyCallForeignFunction(name unsafe.Pointer, nameSize uint32, param unsafe.Pointer, paramSize uint32, retData *uint32, retSize *uint32) uint32

//go:wasmimport env proxy_set_tick_period_milliseconds
func proxySetTickPeriodMilliseconds(period uint32) uint32

//go:wasmimport env proxy_set_effective_context
func proxySetEffectiveContext(contextID uint32) uint32

//go:wasmimport env proxy_done
func proxyDone() uint32

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(metricType uint32, name unsafe.Pointer, nameSize uint32, retID *uint32) uint32

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(metricID uint32, offset int64) uint32

//go:wasmimport env proxy_record_metric
func proxyRecordMetric(metricID uint32, value uint64) uint32

//go:wasmimport env proxy_get_metric
func proxyGetMetric(metricID uint32, retValue *uint64) uint32

func init() {
	// The release function is never called: this host serves the whole
	// lifetime of the module, and wasm runs single-threaded.
	_ = internal.RegisterMockWasmHost(wasmHost{})
}

// outPtr and outSize are the out-slots of every host call that returns a
// buffer. Locals passed to an imported function escape to the heap (the
// compiler cannot see into the import), which cost two allocations per call;
// wasm runs one call at a time, and a nested callback (the host calling
// proxy_on_memory_allocate, or an emulator answering synchronously) finishes
// before the host writes the outer call's slots, so one pair serves all.
var outPtr, outSize uint32

// hostBuffers holds every buffer proxy_on_memory_allocate handed to the host
// during the current host call. The host only knows their addresses as i32,
// which Go's garbage collector cannot see, so they must stay referenced here
// until the call that asked for them returns and adopt turns them back into
// real Go pointers.
var hostBuffers [][]byte

// allocate serves proxy_on_memory_allocate.
func allocate(size uint32) uint32 {
	// A zero-size request still needs a distinct, valid address.
	n := int(max(size, 1))
	var buf []byte
	// Reuse a released buffer of about the right size (the host overwrites
	// the bytes it asked for): the newest few are looked at.
	for i := len(freeBuffers) - 1; i >= 0 && i >= len(freeBuffers)-8; i-- {
		if b := freeBuffers[i]; cap(b) >= n && cap(b) <= 2*n+64 {
			buf = b[:n]
			last := len(freeBuffers) - 1
			freeBuffers[i] = freeBuffers[last]
			freeBuffers[last] = nil
			freeBuffers = freeBuffers[:last]
			break
		}
	}
	if buf == nil {
		buf = make([]byte, n)
	}
	hostBuffers = append(hostBuffers, buf)
	return uint32(uintptr(unsafe.Pointer(&buf[0])))
}

// freeBuffers are host buffers the plugin released for reuse (Release).
var freeBuffers [][]byte

// Bounds on what freeBuffers keeps.
const (
	maxFreeBuffers   = 64
	maxFreeBufferCap = 64 << 10
)

func release1(b []byte) {
	if cap(b) == 0 || cap(b) > maxFreeBufferCap || len(freeBuffers) >= maxFreeBuffers {
		return
	}
	freeBuffers = append(freeBuffers, b[:0])
}

// adopt converts an address and size written by the host into a Go pointer to
// a buffer that allocate made, and forgets every pending buffer: the host call
// that produced them has returned. An address this module did not hand out is
// treated as empty rather than dereferenced.
func adopt(ptr, size uint32, data **byte, n *int) {
	*data, *n = nil, 0
	if b := pending(ptr, size); b != nil {
		*data, *n = &b[0], len(b)
	}
}

// adoptSlice is adopt returning the buffer as a slice (nil when empty). It
// reslices the buffer allocate made rather than rebuilding a slice from the
// pointer: unsafe.Slice checks its length with a call to math.MulUintptr,
// a real function call compiled to WebAssembly.
func adoptSlice(ptr, size uint32) []byte { return pending(ptr, size) }

// pending finds the buffer allocate made at ptr, cut to size (nil when none
// fits), and forgets every pending buffer.
func pending(ptr, size uint32) []byte {
	var out []byte
	if ptr != 0 && size != 0 {
		for _, b := range hostBuffers {
			if uint32(uintptr(unsafe.Pointer(&b[0]))) == ptr && int(size) <= len(b) {
				out = b[:size:size]
				break
			}
		}
	}
	forget()
	// A host that fails a call may leave the slots unwritten: never let the
	// next call read this one's.
	outPtr, outSize = 0, 0
	return out
}

// release forgets pending buffers after a host call that returns none.
func release() {
	if len(hostBuffers) > 0 {
		forget()
	}
}

// forget drops the references to pending buffers, one store each: for the
// one or two buffers a call leaves, clear's runtime calls (memclrHasPointers,
// its write barrier, memclrNoHeapPointers) cost more than the stores. (The
// compiler turns `for i := range b { b[i] = nil }` into such a clear.)
func forget() {
	for n := len(hostBuffers); n > 0; n-- {
		hostBuffers[n-1] = nil
	}
	hostBuffers = hostBuffers[:0]
}

func ptr(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }

// wasmHost implements internal.ProxyWasmHost with the real ABI imports.
type wasmHost struct{}

var _ internal.ProxyWasmHost = wasmHost{}

func (wasmHost) ProxyLog(level internal.LogLevel, msg *byte, size int) internal.Status {
	return internal.Status(proxyLog(uint32(level), ptr(msg), uint32(size)))
}

func (wasmHost) ProxySetProperty(path *byte, pathSize int, value *byte, valueSize int) internal.Status {
	return internal.Status(proxySetProperty(ptr(path), uint32(pathSize), ptr(value), uint32(valueSize)))
}

func (wasmHost) ProxyGetProperty(path *byte, pathSize int, retData **byte, retSize *int) internal.Status {
	st := proxyGetProperty(ptr(path), uint32(pathSize), &outPtr, &outSize)
	adopt(outPtr, outSize, retData, retSize)
	return internal.Status(st)
}

func (wasmHost) ProxySendLocalResponse(status uint32, details *byte, detailsSize int, body *byte, bodySize int, headers *byte, headersSize int, grpcStatus int32) internal.Status {
	st := proxySendLocalResponse(status, ptr(details), uint32(detailsSize), ptr(body), uint32(bodySize), ptr(headers), uint32(headersSize), grpcStatus)
	release()
	return internal.Status(st)
}

func (wasmHost) ProxyGetSharedData(key *byte, keySize int, retData **byte, retSize *int, retCas *uint32) internal.Status {
	st := proxyGetSharedData(ptr(key), uint32(keySize), &outPtr, &outSize, retCas)
	adopt(outPtr, outSize, retData, retSize)
	return internal.Status(st)
}

func (wasmHost) ProxySetSharedData(key *byte, keySize int, value *byte, valueSize int, cas uint32) internal.Status {
	return internal.Status(proxySetSharedData(ptr(key), uint32(keySize), ptr(value), uint32(valueSize), cas))
}

func (wasmHost) ProxyRegisterSharedQueue(name *byte, nameSize int, retID *uint32) internal.Status {
	return internal.Status(proxyRegisterSharedQueue(ptr(name), uint32(nameSize), retID))
}

func (wasmHost) ProxyResolveSharedQueue(vmID *byte, vmIDSize int, name *byte, nameSize int, retID *uint32) internal.Status {
	return internal.Status(proxyResolveSharedQueue(ptr(vmID), uint32(vmIDSize), ptr(name), uint32(nameSize), retID))
}

func (wasmHost) ProxyDequeueSharedQueue(queueID uint32, retData **byte, retSize *int) internal.Status {
	st := proxyDequeueSharedQueue(queueID, &outPtr, &outSize)
	adopt(outPtr, outSize, retData, retSize)
	return internal.Status(st)
}

func (wasmHost) ProxyEnqueueSharedQueue(queueID uint32, value *byte, valueSize int) internal.Status {
	return internal.Status(proxyEnqueueSharedQueue(queueID, ptr(value), uint32(valueSize)))
}

func (wasmHost) ProxyGetHeaderMapValue(mapType internal.MapType, key *byte, keySize int, retData **byte, retSize *int) internal.Status {
	st := proxyGetHeaderMapValue(uint32(mapType), ptr(key), uint32(keySize), &outPtr, &outSize)
	adopt(outPtr, outSize, retData, retSize)
	return internal.Status(st)
}

func (wasmHost) ProxyAddHeaderMapValue(mapType internal.MapType, key *byte, keySize int, value *byte, valueSize int) internal.Status {
	return internal.Status(proxyAddHeaderMapValue(uint32(mapType), ptr(key), uint32(keySize), ptr(value), uint32(valueSize)))
}

func (wasmHost) ProxyReplaceHeaderMapValue(mapType internal.MapType, key *byte, keySize int, value *byte, valueSize int) internal.Status {
	return internal.Status(proxyReplaceHeaderMapValue(uint32(mapType), ptr(key), uint32(keySize), ptr(value), uint32(valueSize)))
}

func (wasmHost) ProxyContinueStream(streamType internal.StreamType) internal.Status {
	return internal.Status(proxyContinueStream(uint32(streamType)))
}

func (wasmHost) ProxyCloseStream(streamType internal.StreamType) internal.Status {
	return internal.Status(proxyCloseStream(uint32(streamType)))
}

func (wasmHost) ProxyRemoveHeaderMapValue(mapType internal.MapType, key *byte, keySize int) internal.Status {
	return internal.Status(proxyRemoveHeaderMapValue(uint32(mapType), ptr(key), uint32(keySize)))
}

func (wasmHost) ProxyGetHeaderMapPairs(mapType internal.MapType, retData **byte, retSize *int) internal.Status {
	st := proxyGetHeaderMapPairs(uint32(mapType), &outPtr, &outSize)
	adopt(outPtr, outSize, retData, retSize)
	return internal.Status(st)
}

func (wasmHost) ProxySetHeaderMapPairs(mapType internal.MapType, data *byte, size int) internal.Status {
	return internal.Status(proxySetHeaderMapPairs(uint32(mapType), ptr(data), uint32(size)))
}

func (wasmHost) ProxyGetBufferBytes(bufferType internal.BufferType, start int, maxSize int, retData **byte, retSize *int) internal.Status {
	st := proxyGetBufferBytes(uint32(bufferType), uint32(start), uint32(maxSize), &outPtr, &outSize)
	adopt(outPtr, outSize, retData, retSize)
	return internal.Status(st)
}

func (wasmHost) ProxySetBufferBytes(bufferType internal.BufferType, start int, maxSize int, data *byte, size int) internal.Status {
	return internal.Status(proxySetBufferBytes(uint32(bufferType), uint32(start), uint32(maxSize), ptr(data), uint32(size)))
}

func (wasmHost) ProxyHttpCall(upstream *byte, upstreamSize int, headers *byte, headersSize int, body *byte, bodySize int, trailers *byte, trailersSize int, timeout uint32, retCalloutID *uint32) internal.Status {
	st := proxyHttpCall(ptr(upstream), uint32(upstreamSize), ptr(headers), uint32(headersSize), ptr(body), uint32(bodySize), ptr(trailers), uint32(trailersSize), timeout, retCalloutID)
	// A host may answer synchronously (the SDK's emulator does), running
	// callbacks that allocate; none of that memory is ours to keep here.
	release()
	return internal.Status(st)
}

func (wasmHost) ProxyCallForeignFunction(name *byte, nameSize int, param *byte, paramSize int, retData **byte, retSize *int) internal.Status {
	st := proxyCallForeignFunction(ptr(name), uint32(nameSize), ptr(param), uint32(paramSize), &outPtr, &outSize)
	adopt(outPtr, outSize, retData, retSize)
	return internal.Status(st)
}

func (wasmHost) ProxySetTickPeriodMilliseconds(period uint32) internal.Status {
	return internal.Status(proxySetTickPeriodMilliseconds(period))
}

func (wasmHost) ProxySetEffectiveContext(contextID uint32) internal.Status {
	return internal.Status(proxySetEffectiveContext(contextID))
}

func (wasmHost) ProxyDone() internal.Status { return internal.Status(proxyDone()) }

func (wasmHost) ProxyDefineMetric(metricType internal.MetricType, name *byte, nameSize int, retID *uint32) internal.Status {
	return internal.Status(proxyDefineMetric(uint32(metricType), ptr(name), uint32(nameSize), retID))
}

func (wasmHost) ProxyIncrementMetric(metricID uint32, offset int64) internal.Status {
	return internal.Status(proxyIncrementMetric(metricID, offset))
}

func (wasmHost) ProxyRecordMetric(metricID uint32, value uint64) internal.Status {
	return internal.Status(proxyRecordMetric(metricID, value))
}

func (wasmHost) ProxyGetMetric(metricID uint32, retValue *uint64) internal.Status {
	return internal.Status(proxyGetMetric(metricID, retValue))
}

// The raw calls behind raw.go, straight to the imports: no SDK interface in
// between, whose pointer arguments would escape.

func rawHeaderPairs(mapType internal.MapType) ([]byte, internal.Status) {
	st := proxyGetHeaderMapPairs(uint32(mapType), &outPtr, &outSize)
	return adoptSlice(outPtr, outSize), internal.Status(st)
}

func rawReplaceHeader(mapType internal.MapType, name, value string) internal.Status {
	return internal.Status(proxyReplaceHeaderMapValue(uint32(mapType), unsafe.Pointer(unsafe.StringData(name)), uint32(len(name)),
		unsafe.Pointer(unsafe.StringData(value)), uint32(len(value))))
}

func rawRecordMetric(id uint32, value uint64) internal.Status {
	return internal.Status(proxyRecordMetric(id, value))
}

func rawProperty(path []byte) ([]byte, internal.Status) {
	st := proxyGetProperty(ptr(&path[0]), uint32(len(path)), &outPtr, &outSize)
	return adoptSlice(outPtr, outSize), internal.Status(st)
}

func rawBuffer(bufferType internal.BufferType, start, maxSize int) ([]byte, internal.Status) {
	st := proxyGetBufferBytes(uint32(bufferType), uint32(start), uint32(maxSize), &outPtr, &outSize)
	return adoptSlice(outPtr, outSize), internal.Status(st)
}
