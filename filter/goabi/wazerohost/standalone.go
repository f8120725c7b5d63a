//go:build !wasip1

package wazerohost

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Standalone runs a compiled proxy-wasm module on a host of its own: the
// proxy-wasm ABI (v0.2.1) implemented directly against the module's memory,
// with every piece of state in the value, instead of through the SDK's
// emulator (proxytest), whose state is global to the process. Streams run one
// at a time, as on one proxy worker thread, but several Standalone values run
// in parallel, one per goroutine: replay uses one per core.
//
// It implements what an HTTP filter uses: logging, properties, header maps,
// request and response bodies, plugin configuration, metrics and the tick
// period. Calls a filter makes outside of that (outgoing HTTP calls, shared
// data and queues, foreign functions) answer "unimplemented", as a proxy
// without the feature would.
type Standalone struct {
	ctx     context.Context
	runtime wazero.Runtime
	mod     api.Module
	fns     guestFns
	stack   []uint64

	config  []byte
	props   map[string][]byte
	metrics []uint64
	names   map[string]uint32
	// Critical and error log lines, for a refused configuration.
	logs    []string
	nextID  uint32
	started bool
	pairs   []byte // scratch for serialized header maps
	cur     *Stream
}

// Stream is one HTTP exchange as the host sees it. The filter reads and edits
// its header maps; after Do they hold what the proxy would forward.
type Stream struct {
	RequestHeaders  [][2]string
	RequestBody     []byte
	ResponseHeaders [][2]string // nil: no response phase
	// LocalResponse is the status of a response the filter sent itself
	// (proxy_send_local_response), 0 when none.
	LocalResponse uint32
	LocalHeaders  [][2]string
}

// ABI status codes and map and buffer types (proxy-wasm v0.2.1).
const (
	stOK            = 0
	stNotFound      = 1
	stBadArgument   = 2
	stUnimplemented = 12

	mapRequestHeaders  = 0
	mapResponseHeaders = 2

	bufRequestBody  = 0
	bufVMConfig     = 6
	bufPluginConfig = 7
)

// NewStandalone compiles (or takes from cache, when not nil) and instantiates
// a c-shared proxy-wasm module on its own host. props are the properties the
// host answers proxy_get_property with, keyed by path segments joined by NUL.
func NewStandalone(wasm []byte, cache wazero.CompilationCache, props map[string][]byte) (*Standalone, error) {
	ctx := context.Background()
	s := &Standalone{ctx: ctx, stack: make([]uint64, 8), props: props, names: map[string]uint32{}, nextID: 1}
	cfg := wazero.NewRuntimeConfig()
	if cache != nil {
		cfg = cfg.WithCompilationCache(cache)
	}
	s.runtime = wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, s.runtime); err != nil {
		return nil, err
	}
	if err := s.exportHost(ctx); err != nil {
		s.runtime.Close(ctx)
		return nil, err
	}
	compiled, err := s.runtime.CompileModule(ctx, wasm)
	if err != nil {
		s.runtime.Close(ctx)
		return nil, err
	}
	if _, ok := compiled.ExportedFunctions()["_initialize"]; !ok {
		s.runtime.Close(ctx)
		return nil, errors.New("module does not export _initialize (build it with -buildmode=c-shared)")
	}
	mcfg := wazero.NewModuleConfig().WithStartFunctions("_initialize").WithStderr(nopWriter{}).WithStdout(nopWriter{}).
		WithSysWalltime().WithSysNanotime()
	if s.mod, err = s.runtime.InstantiateModule(withMemory(ctx), compiled, mcfg); err != nil {
		s.runtime.Close(ctx)
		return nil, err
	}
	s.fns = lookupGuestFns(s.mod)
	if s.fns.alloc == nil || s.fns.contextCreate == nil || s.fns.configure == nil || s.fns.reqHeaders == nil {
		s.runtime.Close(ctx)
		return nil, errors.New("module lacks the proxy-wasm exports proxy_on_memory_allocate, proxy_on_context_create, proxy_on_configure or proxy_on_request_headers")
	}
	return s, nil
}

// Close releases the runtime.
func (s *Standalone) Close() error { return s.runtime.Close(s.ctx) }

// MemorySize returns the size of the guest's linear memory in bytes: what
// the VM holds (a Go guest's memory grows with its heap and never shrinks).
func (s *Standalone) MemorySize() uint32 { return s.mod.Memory().Size() }

// Start starts a plugin with the given configuration, as a proxy does when
// it loads the filter, and returns its root context's id for Do. A VM hosts
// any number of plugins (Envoy shares one VM between plugins the same way);
// the first Start also starts the VM. A refused configuration is an error
// quoting the plugin's critical and error logs.
func (s *Standalone) Start(config []byte) (uint32, error) {
	s.config = config
	s.logs = s.logs[:0]
	if !s.started && s.fns.vmStart != nil {
		s.call(s.fns.vmStart, 0, 0)
	}
	s.started = true
	root := s.nextID
	s.nextID++
	s.call(s.fns.contextCreate, uint64(root), 0)
	if s.call(s.fns.configure, uint64(root), uint64(len(config))) != 1 {
		return 0, fmt.Errorf("the plugin refused its configuration: %s", strings.Join(s.logs, "; "))
	}
	return root, nil
}

// Do runs one stream through the plugin started as root: its request
// headers (and body, when there is one), its response headers when
// st.ResponseHeaders is not nil, and its end (log, done, delete). The
// plugin's edits are left in st.
func (s *Standalone) Do(root uint32, st *Stream) {
	id := uint64(s.nextID)
	s.nextID++
	s.cur = st
	defer func() { s.cur = nil }()
	s.call(s.fns.contextCreate, id, uint64(root))
	s.call(s.fns.reqHeaders, id, uint64(len(st.RequestHeaders)), b2u(len(st.RequestBody) == 0))
	if len(st.RequestBody) > 0 && st.LocalResponse == 0 {
		s.call(s.fns.reqBody, id, uint64(len(st.RequestBody)), 1)
	}
	if st.ResponseHeaders != nil && st.LocalResponse == 0 {
		s.call(s.fns.respHeaders, id, uint64(len(st.ResponseHeaders)), 1)
	}
	s.call(s.fns.log, id)
	s.call(s.fns.done, id)
	s.call(s.fns.delete, id)
}

func (s *Standalone) call(fn api.Function, args ...uint64) uint64 {
	if fn == nil {
		return 0
	}
	stack := s.stack
	copy(stack, args)
	if err := fn.CallWithStack(s.ctx, stack); err != nil {
		panic(fmt.Sprintf("wasm trap: %v", err))
	}
	return stack[0]
}

// view returns guest memory without copying: only for use before the guest
// runs again.
func view(mod api.Module, ptr, size uint64) []byte {
	if size == 0 {
		return nil
	}
	b, ok := mod.Memory().Read(uint32(ptr), uint32(size))
	if !ok {
		panic("guest pointer out of range")
	}
	return b
}

// out copies data into a buffer the guest allocates and writes its address
// and size to the guest's out-slots.
func (s *Standalone) out(ctx context.Context, mod api.Module, data []byte, retPtr, retSize uint64) {
	if len(data) == 0 {
		return
	}
	stack := [1]uint64{uint64(len(data))}
	if err := s.fns.alloc.CallWithStack(ctx, stack[:]); err != nil {
		panic(err)
	}
	p := uint32(stack[0])
	m := mod.Memory()
	if !m.Write(p, data) || !m.WriteUint32Le(uint32(retPtr), p) || !m.WriteUint32Le(uint32(retSize), uint32(len(data))) {
		panic("guest buffer out of range")
	}
}

func u32(mod api.Module, ptr uint64, v uint32) {
	if !mod.Memory().WriteUint32Le(uint32(ptr), v) {
		panic("guest pointer out of range")
	}
}

// headerMap returns the stream's map of a type, nil for any other.
func (s *Standalone) headerMap(t uint64) *[][2]string {
	if s.cur == nil {
		return nil
	}
	switch t {
	case mapRequestHeaders:
		return &s.cur.RequestHeaders
	case mapResponseHeaders:
		return &s.cur.ResponseHeaders
	}
	return nil
}

// serializePairs encodes a header map as the ABI does, into b's array
// (grown when short; the caller copies the result into the guest at once).
func serializePairs(b []byte, hs [][2]string) []byte {
	size := 4
	for _, h := range hs {
		size += 8 + len(h[0]) + len(h[1]) + 2
	}
	if cap(b) < size {
		b = make([]byte, 0, size)
	}
	b = b[:4+8*len(hs)]
	binary.LittleEndian.PutUint32(b, uint32(len(hs)))
	for i, h := range hs {
		binary.LittleEndian.PutUint32(b[4+8*i:], uint32(len(h[0])))
		binary.LittleEndian.PutUint32(b[8+8*i:], uint32(len(h[1])))
	}
	for _, h := range hs {
		b = append(b, h[0]...)
		b = append(b, 0)
		b = append(b, h[1]...)
		b = append(b, 0)
	}
	return b
}

// deserializePairs decodes an ABI header map; false when malformed.
func deserializePairs(b []byte) ([][2]string, bool) {
	if len(b) < 4 {
		return nil, len(b) == 0
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n > (len(b)-4)/8 {
		return nil, false
	}
	out := make([][2]string, 0, n)
	d := 4 + 8*n
	for i := 0; i < n; i++ {
		ks := int(binary.LittleEndian.Uint32(b[4+8*i:]))
		vs := int(binary.LittleEndian.Uint32(b[8+8*i:]))
		if ks > len(b)-d-1 || vs > len(b)-d-ks-2 {
			return nil, false
		}
		out = append(out, [2]string{string(b[d : d+ks]), string(b[d+ks+1 : d+ks+1+vs])})
		d += ks + vs + 2
	}
	return out, true
}

func (s *Standalone) exportHost(ctx context.Context) error {
	unimplemented := func(_ context.Context, _ api.Module, st []uint64) { st[0] = stUnimplemented }
	type fn = func(ctx context.Context, mod api.Module, st []uint64)
	fns := []struct {
		name   string
		params []api.ValueType
		fn     fn
	}{
		{"proxy_log", p(3), func(_ context.Context, mod api.Module, st []uint64) {
			if level := st[0]; level >= 4 { // error, critical
				s.logs = append(s.logs, string(view(mod, st[1], st[2])))
			}
			st[0] = stOK
		}},
		{"proxy_get_property", p(4), func(ctx context.Context, mod api.Module, st []uint64) {
			v, ok := s.props[string(view(mod, st[0], st[1]))]
			if !ok {
				st[0] = stNotFound
				return
			}
			s.out(ctx, mod, v, st[2], st[3])
			st[0] = stOK
		}},
		{"proxy_set_property", p(4), unimplemented},
		{"proxy_get_header_map_pairs", p(3), func(ctx context.Context, mod api.Module, st []uint64) {
			m := s.headerMap(st[0])
			if m == nil {
				st[0] = stNotFound
				return
			}
			s.pairs = serializePairs(s.pairs, *m)
			s.out(ctx, mod, s.pairs, st[1], st[2])
			st[0] = stOK
		}},
		{"proxy_set_header_map_pairs", p(3), func(_ context.Context, mod api.Module, st []uint64) {
			m := s.headerMap(st[0])
			hs, ok := deserializePairs(view(mod, st[1], st[2]))
			if m == nil || !ok {
				st[0] = stBadArgument
				return
			}
			for i := range hs {
				hs[i][0] = strings.ToLower(hs[i][0])
			}
			*m = hs
			st[0] = stOK
		}},
		{"proxy_get_header_map_value", p(5), func(ctx context.Context, mod api.Module, st []uint64) {
			m := s.headerMap(st[0])
			if m == nil {
				st[0] = stNotFound
				return
			}
			key := strings.ToLower(string(view(mod, st[1], st[2])))
			for _, h := range *m {
				if h[0] == key {
					s.out(ctx, mod, []byte(h[1]), st[3], st[4])
					st[0] = stOK
					return
				}
			}
			st[0] = stNotFound
		}},
		{"proxy_replace_header_map_value", p(5), func(_ context.Context, mod api.Module, st []uint64) {
			m := s.headerMap(st[0])
			if m == nil {
				st[0] = stNotFound
				return
			}
			key := strings.ToLower(string(view(mod, st[1], st[2])))
			value := string(view(mod, st[3], st[4]))
			st[0] = stOK
			for i := range *m {
				if (*m)[i][0] == key {
					(*m)[i][1] = value
					return
				}
			}
			*m = append(*m, [2]string{key, value})
		}},
		{"proxy_add_header_map_value", p(5), func(_ context.Context, mod api.Module, st []uint64) {
			m := s.headerMap(st[0])
			if m == nil {
				st[0] = stNotFound
				return
			}
			*m = append(*m, [2]string{strings.ToLower(string(view(mod, st[1], st[2]))), string(view(mod, st[3], st[4]))})
			st[0] = stOK
		}},
		{"proxy_remove_header_map_value", p(3), func(_ context.Context, mod api.Module, st []uint64) {
			m := s.headerMap(st[0])
			if m == nil {
				st[0] = stNotFound
				return
			}
			key := strings.ToLower(string(view(mod, st[1], st[2])))
			kept := (*m)[:0]
			for _, h := range *m {
				if h[0] != key {
					kept = append(kept, h)
				}
			}
			*m = kept
			st[0] = stOK
		}},
		{"proxy_get_buffer_bytes", p(5), func(ctx context.Context, mod api.Module, st []uint64) {
			var buf []byte
			switch st[0] {
			case bufRequestBody:
				if s.cur != nil {
					buf = s.cur.RequestBody
				}
			case bufPluginConfig:
				buf = s.config
			case bufVMConfig:
			default:
				st[0] = stUnimplemented
				return
			}
			start, max := st[1], st[2]
			switch {
			case len(buf) == 0:
				st[0] = stNotFound
				return
			case start >= uint64(len(buf)):
				st[0] = stBadArgument
				return
			}
			buf = buf[start:]
			if max < uint64(len(buf)) {
				buf = buf[:max]
			}
			s.out(ctx, mod, buf, st[3], st[4])
			st[0] = stOK
		}},
		{"proxy_set_buffer_bytes", p(5), unimplemented},
		{"proxy_send_local_response", p(8), func(_ context.Context, mod api.Module, st []uint64) {
			if s.cur == nil {
				st[0] = stBadArgument
				return
			}
			hs, ok := deserializePairs(view(mod, st[5], st[6]))
			if !ok {
				st[0] = stBadArgument
				return
			}
			s.cur.LocalResponse, s.cur.LocalHeaders = uint32(st[0]), hs
			st[0] = stOK
		}},
		{"proxy_continue_stream", p(1), func(_ context.Context, _ api.Module, st []uint64) { st[0] = stOK }},
		{"proxy_close_stream", p(1), func(_ context.Context, _ api.Module, st []uint64) { st[0] = stOK }},
		{"proxy_set_tick_period_milliseconds", p(1), func(_ context.Context, _ api.Module, st []uint64) { st[0] = stOK }},
		{"proxy_set_effective_context", p(1), func(_ context.Context, _ api.Module, st []uint64) { st[0] = stOK }},
		{"proxy_done", nil, func(_ context.Context, _ api.Module, st []uint64) { st[0] = stOK }},
		{"proxy_define_metric", p(4), func(_ context.Context, mod api.Module, st []uint64) {
			name := string(view(mod, st[1], st[2]))
			id, ok := s.names[name]
			if !ok {
				id = uint32(len(s.metrics))
				s.metrics = append(s.metrics, 0)
				s.names[name] = id
			}
			u32(mod, st[3], id)
			st[0] = stOK
		}},
		{"proxy_increment_metric", []api.ValueType{i32, i64}, func(_ context.Context, _ api.Module, st []uint64) {
			if id := st[0]; id < uint64(len(s.metrics)) {
				s.metrics[id] += st[1]
				st[0] = stOK
				return
			}
			st[0] = stNotFound
		}},
		{"proxy_record_metric", []api.ValueType{i32, i64}, func(_ context.Context, _ api.Module, st []uint64) {
			if id := st[0]; id < uint64(len(s.metrics)) {
				s.metrics[id] = st[1]
				st[0] = stOK
				return
			}
			st[0] = stNotFound
		}},
		{"proxy_get_metric", p(2), func(_ context.Context, mod api.Module, st []uint64) {
			if id := st[0]; id < uint64(len(s.metrics)) {
				if !mod.Memory().WriteUint64Le(uint32(st[1]), s.metrics[id]) {
					panic("guest pointer out of range")
				}
				st[0] = stOK
				return
			}
			st[0] = stNotFound
		}},
		{"proxy_http_call", p(10), unimplemented},
		{"proxy_call_foreign_function", p(6), unimplemented},
		{"proxy_get_shared_data", p(5), func(_ context.Context, _ api.Module, st []uint64) { st[0] = stNotFound }},
		{"proxy_set_shared_data", p(5), unimplemented},
		{"proxy_register_shared_queue", p(3), unimplemented},
		{"proxy_resolve_shared_queue", p(5), unimplemented},
		{"proxy_dequeue_shared_queue", p(3), func(_ context.Context, _ api.Module, st []uint64) { st[0] = stEmpty }},
		{"proxy_enqueue_shared_queue", p(3), unimplemented},
	}
	imports := make([]hostImport, len(fns))
	for i, f := range fns {
		imports[i] = hostImport{f.name, f.params, one, f.fn}
	}
	return instantiateHost(ctx, s.runtime, imports)
}

const stEmpty = 7

// SetProperty sets (or replaces) a property the host answers with; path is
// the property's segments joined by NUL. The host keeps value as it is.
func (s *Standalone) SetProperty(path string, value []byte) { s.props[path] = value }

// SetPropertyString is SetProperty for a string value, without a copy when
// the property already has that value.
func (s *Standalone) SetPropertyString(path, value string) {
	if old, ok := s.props[path]; ok && string(old) == value {
		return
	}
	s.props[path] = []byte(value)
}
