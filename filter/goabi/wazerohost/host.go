//go:build !wasip1

package wazerohost

import (
	"context"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/internal"
)

const i32, i64 = api.ValueTypeI32, api.ValueTypeI64

// mem gives host functions access to guest memory. Every failure is a guest
// bug (an out-of-range pointer) and panics, which wazero turns into a trap
// for this call only.
type mem struct {
	vm  *VM
	mod api.Module
}

// in returns a host pointer to a copy of size bytes of guest memory at ptr
// (nil when size is 0). It must be a copy: the SDK's emulator keeps what it
// is given (header values, metric names) as strings that alias the bytes, and
// the guest reuses its memory as soon as the call returns. (proxytest's own
// wrapper hands out views and so can report garbage after the guest's
// garbage collector has run; a real host copies, as here.)
func (m mem) in(ptr, size uint64) *byte {
	if size == 0 {
		return nil
	}
	b, ok := m.mod.Memory().Read(uint32(ptr), uint32(size))
	if !ok {
		panic("guest pointer out of range")
	}
	c := make([]byte, len(b))
	copy(c, b)
	return &c[0]
}

// view is in without the copy, for arguments the emulator only looks up and
// never keeps (a property path, a header name to find or remove); it must
// not be used once the guest has run again.
func (m mem) view(ptr, size uint64) *byte {
	if size == 0 {
		return nil
	}
	b, ok := m.mod.Memory().Read(uint32(ptr), uint32(size))
	if !ok {
		panic("guest pointer out of range")
	}
	return &b[0]
}

// out copies host bytes into a buffer the guest allocates, and writes its
// address and size to the guest's out-slots.
func (m mem) out(ctx context.Context, data *byte, size int, retPtr, retSize uint64) {
	if size == 0 || data == nil {
		return
	}
	src := internal.RawBytePtrToByteSlice(data, size)
	stack := [1]uint64{uint64(size)}
	if err := m.vm.guard.alloc(ctx, m.vm.fns.alloc, stack[:]); err != nil {
		panic(err)
	}
	p := uint32(stack[0])
	mm := m.mod.Memory()
	if !mm.Write(p, src) || !mm.WriteUint32Le(uint32(retPtr), p) || !mm.WriteUint32Le(uint32(retSize), uint32(size)) {
		panic("guest buffer out of range")
	}
}

func (m mem) u32(ptr uint64, v uint32) {
	if !m.mod.Memory().WriteUint32Le(uint32(ptr), v) {
		panic("guest pointer out of range")
	}
}

type hostFn struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
	fn      func(ctx context.Context, m mem, s []uint64)
}

func p(n int) []api.ValueType {
	out := make([]api.ValueType, n)
	for i := range out {
		out[i] = i32
	}
	return out
}

var one = []api.ValueType{i32}

// exportHost defines module "env": the host side of proxy-wasm ABI v0.2.1,
// each function delegating to the SDK's registered (mock) host.
func (vm *VM) exportHost(ctx context.Context) error {
	fns := []hostFn{
		{"proxy_log", p(3), one, func(_ context.Context, m mem, s []uint64) {
			s[0] = uint64(internal.ProxyLog(internal.LogLevel(s[0]), m.in(s[1], s[2]), int(s[2])))
		}},
		{"proxy_set_property", p(4), one, func(_ context.Context, m mem, s []uint64) {
			s[0] = uint64(internal.ProxySetProperty(m.in(s[0], s[1]), int(s[1]), m.in(s[2], s[3]), int(s[3])))
		}},
		{"proxy_get_property", p(4), one, func(ctx context.Context, m mem, s []uint64) {
			var data *byte
			var n int
			st := internal.ProxyGetProperty(m.view(s[0], s[1]), int(s[1]), &data, &n)
			m.out(ctx, data, n, s[2], s[3])
			s[0] = uint64(st)
		}},
		{"proxy_send_local_response", p(8), one, func(_ context.Context, m mem, s []uint64) {
			s[0] = uint64(internal.ProxySendLocalResponse(uint32(s[0]), m.in(s[1], s[2]), int(s[2]), m.in(s[3], s[4]), int(s[4]), m.in(s[5], s[6]), int(s[6]), int32(s[7])))
		}},
		{"proxy_get_shared_data", p(5), one, func(ctx context.Context, m mem, s []uint64) {
			var data *byte
			var n int
			var cas uint32
			st := internal.ProxyGetSharedData(m.in(s[0], s[1]), int(s[1]), &data, &n, &cas)
			m.out(ctx, data, n, s[2], s[3])
			m.u32(s[4], cas)
			s[0] = uint64(st)
		}},
		{"proxy_set_shared_data", p(5), one, func(_ context.Context, m mem, s []uint64) {
			s[0] = uint64(internal.ProxySetSharedData(m.in(s[0], s[1]), int(s[1]), m.in(s[2], s[3]), int(s[3]), uint32(s[4])))
		}},
		{"proxy_register_shared_queue", p(3), one, func(_ context.Context, m mem, s []uint64) {
			var id uint32
			st := internal.ProxyRegisterSharedQueue(m.in(s[0], s[1]), int(s[1]), &id)
			m.u32(s[2], id)
			s[0] = uint64(st)
		}},
		{"proxy_resolve_shared_queue", p(5), one, func(_ context.Context, m mem, s []uint64) {
			var id uint32
			st := internal.ProxyResolveSharedQueue(m.in(s[0], s[1]), int(s[1]), m.in(s[2], s[3]), int(s[3]), &id)
			m.u32(s[4], id)
			s[0] = uint64(st)
		}},
		{"proxy_dequeue_shared_queue", p(3), one, func(ctx context.Context, m mem, s []uint64) {
			var data *byte
			var n int
			st := internal.ProxyDequeueSharedQueue(uint32(s[0]), &data, &n)
			m.out(ctx, data, n, s[1], s[2])
			s[0] = uint64(st)
		}},
		{"proxy_enqueue_shared_queue", p(3), one, func(_ context.Context, m mem, s []uint64) {
			s[0] = uint64(internal.ProxyEnqueueSharedQueue(uint32(s[0]), m.in(s[1], s[2]), int(s[2])))
		}},
		{"proxy_get_header_map_value", p(5), one, func(ctx context.Context, m mem, s []uint64) {
			var data *byte
			var n int
			st := internal.ProxyGetHeaderMapValue(internal.MapType(s[0]), m.view(s[1], s[2]), int(s[2]), &data, &n)
			m.out(ctx, data, n, s[3], s[4])
			s[0] = uint64(st)
		}},
		{"proxy_add_header_map_value", p(5), one, func(_ context.Context, m mem, s []uint64) {
			s[0] = uint64(internal.ProxyAddHeaderMapValue(internal.MapType(s[0]), m.in(s[1], s[2]), int(s[2]), m.in(s[3], s[4]), int(s[4])))
		}},
		{"proxy_replace_header_map_value", p(5), one, func(_ context.Context, m mem, s []uint64) {
			s[0] = uint64(internal.ProxyReplaceHeaderMapValue(internal.MapType(s[0]), m.in(s[1], s[2]), int(s[2]), m.in(s[3], s[4]), int(s[4])))
		}},
		{"proxy_remove_header_map_value", p(3), one, func(_ context.Context, m mem, s []uint64) {
			s[0] = uint64(internal.ProxyRemoveHeaderMapValue(internal.MapType(s[0]), m.view(s[1], s[2]), int(s[2])))
		}},
		{"proxy_get_header_map_pairs", p(3), one, func(ctx context.Context, m mem, s []uint64) {
			var data *byte
			var n int
			st := internal.ProxyGetHeaderMapPairs(internal.MapType(s[0]), &data, &n)
			m.out(ctx, data, n, s[1], s[2])
			s[0] = uint64(st)
		}},
		{"proxy_set_header_map_pairs", p(3), one, func(_ context.Context, m mem, s []uint64) {
			s[0] = uint64(internal.ProxySetHeaderMapPairs(internal.MapType(s[0]), m.in(s[1], s[2]), int(s[2])))
		}},
		{"proxy_get_buffer_bytes", p(5), one, func(ctx context.Context, m mem, s []uint64) {
			var data *byte
			var n int
			st := internal.ProxyGetBufferBytes(internal.BufferType(s[0]), int(s[1]), int(s[2]), &data, &n)
			m.out(ctx, data, n, s[3], s[4])
			s[0] = uint64(st)
		}},
		{"proxy_set_buffer_bytes", p(5), one, func(_ context.Context, m mem, s []uint64) {
			s[0] = uint64(internal.ProxySetBufferBytes(internal.BufferType(s[0]), int(s[1]), int(s[2]), m.in(s[3], s[4]), int(s[4])))
		}},
		{"proxy_continue_stream", p(1), one, func(_ context.Context, _ mem, s []uint64) {
			s[0] = uint64(internal.ProxyContinueStream(internal.StreamType(s[0])))
		}},
		{"proxy_close_stream", p(1), one, func(_ context.Context, _ mem, s []uint64) {
			s[0] = uint64(internal.ProxyCloseStream(internal.StreamType(s[0])))
		}},
		{"proxy_http_call", p(10), one, func(_ context.Context, m mem, s []uint64) {
			var id uint32
			st := internal.ProxyHttpCall(m.in(s[0], s[1]), int(s[1]), m.in(s[2], s[3]), int(s[3]), m.in(s[4], s[5]), int(s[5]), m.in(s[6], s[7]), int(s[7]), uint32(s[8]), &id)
			m.u32(s[9], id)
			vm := m.vm
			// The emulator answers a callout later, from the host side; route
			// that answer back into the guest.
			internal.RegisterHttpCallout(id, func(numHeaders, bodySize, numTrailers int) {
				vm.call(vm.fns.httpCallResponse, uint64(vm.rootID), uint64(id), uint64(numHeaders), uint64(bodySize), uint64(numTrailers))
			})
			s[0] = uint64(st)
		}},
		{"proxy_call_foreign_function", p(6), one, func(ctx context.Context, m mem, s []uint64) {
			var data *byte
			var n int
			st := internal.ProxyCallForeignFunction(m.in(s[0], s[1]), int(s[1]), m.in(s[2], s[3]), int(s[3]), &data, &n)
			m.out(ctx, data, n, s[4], s[5])
			s[0] = uint64(st)
		}},
		{"proxy_set_tick_period_milliseconds", p(1), one, func(_ context.Context, _ mem, s []uint64) {
			s[0] = uint64(internal.ProxySetTickPeriodMilliseconds(uint32(s[0])))
		}},
		{"proxy_set_effective_context", p(1), one, func(_ context.Context, _ mem, s []uint64) {
			s[0] = uint64(internal.ProxySetEffectiveContext(uint32(s[0])))
		}},
		{"proxy_done", nil, one, func(_ context.Context, _ mem, s []uint64) {
			s[0] = uint64(internal.ProxyDone())
		}},
		{"proxy_define_metric", p(4), one, func(_ context.Context, m mem, s []uint64) {
			var id uint32
			st := internal.ProxyDefineMetric(internal.MetricType(s[0]), m.in(s[1], s[2]), int(s[2]), &id)
			m.u32(s[3], id)
			s[0] = uint64(st)
		}},
		{"proxy_increment_metric", []api.ValueType{i32, i64}, one, func(_ context.Context, _ mem, s []uint64) {
			s[0] = uint64(internal.ProxyIncrementMetric(uint32(s[0]), int64(s[1])))
		}},
		{"proxy_record_metric", []api.ValueType{i32, i64}, one, func(_ context.Context, _ mem, s []uint64) {
			s[0] = uint64(internal.ProxyRecordMetric(uint32(s[0]), s[1]))
		}},
		{"proxy_get_metric", p(2), one, func(_ context.Context, m mem, s []uint64) {
			var v uint64
			st := internal.ProxyGetMetric(uint32(s[0]), &v)
			if !m.mod.Memory().WriteUint64Le(uint32(s[1]), v) {
				panic("guest pointer out of range")
			}
			s[0] = uint64(st)
		}},
	}
	imports := make([]hostImport, len(fns))
	for i, f := range fns {
		fn := f.fn
		imports[i] = hostImport{f.name, f.params, f.results, func(ctx context.Context, mod api.Module, stack []uint64) {
			fn(ctx, mem{vm: vm, mod: mod}, stack)
		}}
	}
	return instantiateHost(ctx, vm.runtime, imports, &vm.guard)
}

// hostImport is one function of the host module "env".
type hostImport struct {
	name            string
	params, results []api.ValueType
	fn              func(ctx context.Context, mod api.Module, stack []uint64)
}

// instantiateHost defines and instantiates module "env" from imports (both
// bindings use it). An i32 argument arrives in a uint64 whose upper half is
// undefined; it is cleared once here so no function can misread a size or
// pointer.
func instantiateHost(ctx context.Context, r wazero.Runtime, imports []hostImport, guard *callGuard) error {
	b := r.NewHostModuleBuilder("env")
	for _, f := range imports {
		fn, params, name := f.fn, f.params, f.name
		// Of the proxy-wasm calls, Envoy allows only proxy_log while the
		// module initialises.
		atStart := 0
		if name == "proxy_log" {
			atStart = gen427
		}
		b = b.NewFunctionBuilder().
			WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
				guard.check("env", name, atStart)
				for i, t := range params {
					if t == i32 {
						stack[i] = uint64(uint32(stack[i]))
					}
				}
				fn(ctx, mod, stack)
			}), f.params, f.results).
			Export(f.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}
