//go:build wasip1

package goabi

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/internal"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// The callbacks of the proxy-wasm ABI v0.2.1, exported to the host. Each one
// delegates to the SDK's dispatcher. A panic that escapes plugin code would
// trap and take the whole VM (every stream of the proxy) down, so each export
// recovers and answers the most permissive value the ABI allows instead:
// fail open.

//go:wasmexport proxy_abi_version_0_2_1
func proxyABIVersion() {}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 { return allocate(size) }

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(rootContextID, vmConfigSize uint32) (ok uint32) {
	defer recoverTo(&ok, 0)
	return boolean(internal.ProxyOnVMStart(rootContextID, int(vmConfigSize)))
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootContextID, pluginConfigSize uint32) (ok uint32) {
	defer recoverTo(&ok, 0)
	return boolean(internal.ProxyOnConfigure(rootContextID, int(pluginConfigSize)))
}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentContextID uint32) {
	defer recoverTo(nil, 0)
	internal.ProxyOnContextCreate(contextID, parentContextID)
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) (done uint32) {
	defer recoverTo(&done, 1)
	return boolean(internal.ProxyOnDone(contextID))
}

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) {
	defer recoverTo(nil, 0)
	internal.ProxyOnDelete(contextID)
}

//go:wasmexport proxy_on_log
func proxyOnLog(contextID uint32) {
	defer recoverTo(nil, 0)
	internal.ProxyOnLog(contextID)
}

//go:wasmexport proxy_on_tick
func proxyOnTick(rootContextID uint32) {
	defer recoverTo(nil, 0)
	internal.ProxyOnTick(rootContextID)
}

//go:wasmexport proxy_on_queue_ready
func proxyOnQueueReady(rootContextID, queueID uint32) {
	defer recoverTo(nil, 0)
	internal.ProxyOnQueueReady(rootContextID, queueID)
}

//go:wasmexport proxy_on_new_connection
func proxyOnNewConnection(contextID uint32) (action uint32) {
	defer recoverTo(&action, continueAction)
	return uint32(internal.ProxyOnNewConnection(contextID))
}

//go:wasmexport proxy_on_downstream_data
func proxyOnDownstreamData(contextID, dataSize, endOfStream uint32) (action uint32) {
	defer recoverTo(&action, continueAction)
	return uint32(internal.ProxyOnDownstreamData(contextID, int(dataSize), endOfStream != 0))
}

//go:wasmexport proxy_on_downstream_connection_close
func proxyOnDownstreamConnectionClose(contextID, peerType uint32) {
	defer recoverTo(nil, 0)
	internal.ProxyOnDownstreamConnectionClose(contextID, types.PeerType(peerType))
}

//go:wasmexport proxy_on_upstream_data
func proxyOnUpstreamData(contextID, dataSize, endOfStream uint32) (action uint32) {
	defer recoverTo(&action, continueAction)
	return uint32(internal.ProxyOnUpstreamData(contextID, int(dataSize), endOfStream != 0))
}

//go:wasmexport proxy_on_upstream_connection_close
func proxyOnUpstreamConnectionClose(contextID, peerType uint32) {
	defer recoverTo(nil, 0)
	internal.ProxyOnUpstreamConnectionClose(contextID, types.PeerType(peerType))
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) (action uint32) {
	defer recoverTo(&action, continueAction)
	return uint32(internal.ProxyOnRequestHeaders(contextID, int(numHeaders), endOfStream != 0))
}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(contextID, bodySize, endOfStream uint32) (action uint32) {
	defer recoverTo(&action, continueAction)
	return uint32(internal.ProxyOnRequestBody(contextID, int(bodySize), endOfStream != 0))
}

//go:wasmexport proxy_on_request_trailers
func proxyOnRequestTrailers(contextID, numTrailers uint32) (action uint32) {
	defer recoverTo(&action, continueAction)
	return uint32(internal.ProxyOnRequestTrailers(contextID, int(numTrailers)))
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(contextID, numHeaders, endOfStream uint32) (action uint32) {
	defer recoverTo(&action, continueAction)
	return uint32(internal.ProxyOnResponseHeaders(contextID, int(numHeaders), endOfStream != 0))
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(contextID, bodySize, endOfStream uint32) (action uint32) {
	defer recoverTo(&action, continueAction)
	return uint32(internal.ProxyOnResponseBody(contextID, int(bodySize), endOfStream != 0))
}

//go:wasmexport proxy_on_response_trailers
func proxyOnResponseTrailers(contextID, numTrailers uint32) (action uint32) {
	defer recoverTo(&action, continueAction)
	return uint32(internal.ProxyOnResponseTrailers(contextID, int(numTrailers)))
}

//go:wasmexport proxy_on_http_call_response
func proxyOnHttpCallResponse(rootContextID, calloutID, numHeaders, bodySize, numTrailers uint32) {
	defer recoverTo(nil, 0)
	internal.ProxyOnHttpCallResponse(rootContextID, calloutID, int(numHeaders), int(bodySize), int(numTrailers))
}

const continueAction = uint32(types.ActionContinue)

func boolean[T ~bool](b T) uint32 {
	if b {
		return 1
	}
	return 0
}

// recoverTo turns a panic into a fallback result and a critical log line.
func recoverTo(result *uint32, fallback uint32) {
	if r := recover(); r != nil {
		release()
		msg := []byte("meshward: recovered from a panic in a proxy-wasm callback; failing open")
		proxyLog(uint32(internal.LogLevelCritical), ptr(&msg[0]), uint32(len(msg)))
		if result != nil {
			*result = fallback
		}
	}
}
