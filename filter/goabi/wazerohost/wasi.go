//go:build !wasip1

package wazerohost

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// WASI as Envoy's Wasm host answers it (proxy-wasm-cpp-host src/exports.cc,
// registered in src/wasm.cc). Written from the facts in
// shared/envoy-wasm-host.md and the upstream sources they cite; the code is
// ours. Every function answers exactly as cpp-host does at the profile's
// commit, including the odd answers (fd_seek and fd_close log an error and
// succeed; proc_exit logs and returns), because the Go runtime's reaction
// to each answer is what is under test.

// WASI errno values (wasi_snapshot_preview1).
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoInval   = 28
	errnoNoent   = 44
	errnoNosys   = 52
	errnoNotsup  = 58
)

// maxRandomBytes is the most random_get hands out in one call; more is
// EINVAL (cpp-host's PROXY_WASM_HOST_WASI_RANDOM_GET_MAX_SIZE_BYTES).
const maxRandomBytes = 64 << 10

// rightFDWrite is the only right cpp-host gives fds 1 and 2 (rights_base).
const rightFDWrite = 64

// wasiFunction is one WASI function: its signature, the generation that
// registered it, the generation from which it may be called during
// _initialize (0: never), and its answer.
type wasiFunction struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
	since   int
	atStart int
	fn      func(h *wasiHost, ctx context.Context, mod api.Module, s []uint64)
}

// sig builds a parameter list from a compact spec: 'i' for i32, 'I' for i64.
func sig(spec string) []api.ValueType {
	out := make([]api.ValueType, len(spec))
	for i, c := range spec {
		if c == 'I' {
			out[i] = i64
		} else {
			out[i] = i32
		}
	}
	return out
}

// errno answers a constant.
func errno(e uint64) func(*wasiHost, context.Context, api.Module, []uint64) {
	return func(_ *wasiHost, _ context.Context, _ api.Module, s []uint64) { s[0] = e }
}

// wasiFunctions is every function any profile registers, in the order of
// the WASI preview1 specification.
var wasiFunctions = []wasiFunction{
	{"args_get", sig("ii"), one, gen427, gen427, errno(errnoSuccess)},
	{"args_sizes_get", sig("ii"), one, gen427, gen427, wasiArgsSizesGet},
	{"environ_get", sig("ii"), one, gen427, gen427, wasiEnvironGet},
	{"environ_sizes_get", sig("ii"), one, gen427, gen427, wasiEnvironSizesGet},
	{"clock_res_get", sig("ii"), one, gen533, gen533, wasiClockResGet},
	{"clock_time_get", sig("iIi"), one, gen427, gen427, wasiClockTimeGet},
	{"fd_advise", sig("iIIi"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_allocate", sig("iII"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_close", sig("i"), one, gen427, 0, wasiLogAndSucceed("fd_close")},
	{"fd_datasync", sig("i"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_fdstat_get", sig("ii"), one, gen427, gen427, wasiFdstatGet},
	{"fd_fdstat_set_flags", sig("ii"), one, gen427, gen427, errno(errnoNosys)},
	{"fd_fdstat_set_rights", sig("iII"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_filestat_get", sig("ii"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_filestat_set_size", sig("iI"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_filestat_set_times", sig("iIIi"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_pread", sig("iiiIi"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_prestat_get", sig("ii"), one, gen427, gen427, errno(errnoBadf)},
	{"fd_prestat_dir_name", sig("iii"), one, gen427, gen427, errno(errnoNosys)},
	{"fd_pwrite", sig("iiiIi"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_read", sig("iiii"), one, gen427, 0, errno(errnoNosys)},
	{"fd_readdir", sig("iiiIi"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_renumber", sig("ii"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_seek", sig("iIii"), one, gen427, 0, wasiLogAndSucceed("fd_seek")},
	{"fd_sync", sig("i"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_tell", sig("ii"), one, gen533, gen533, errno(errnoNotsup)},
	{"fd_write", sig("iiii"), one, gen427, gen427, wasiFdWrite},
	{"path_create_directory", sig("iii"), one, gen533, gen533, errno(errnoNotsup)},
	{"path_filestat_get", sig("iiiii"), one, gen533, gen533, errno(errnoNotsup)},
	{"path_filestat_set_times", sig("iiiiIIi"), one, gen533, gen533, errno(errnoNotsup)},
	{"path_link", sig("iiiiiii"), one, gen533, gen533, errno(errnoNotsup)},
	{"path_open", sig("iiiiiIIii"), one, gen427, 0, errno(errnoNoent)},
	{"path_readlink", sig("iiiiii"), one, gen533, gen533, errno(errnoNotsup)},
	{"path_remove_directory", sig("iii"), one, gen533, gen533, errno(errnoNotsup)},
	{"path_rename", sig("iiiiii"), one, gen533, gen533, errno(errnoNotsup)},
	{"path_symlink", sig("iiiii"), one, gen533, gen533, errno(errnoNotsup)},
	{"path_unlink_file", sig("iii"), one, gen533, gen533, errno(errnoNotsup)},
	{"poll_oneoff", sig("iiii"), one, gen427, gen533, wasiPollOneoff},
	{"proc_exit", sig("i"), nil, gen427, 0, wasiProcExit},
	{"random_get", sig("ii"), one, gen427, gen427, wasiRandomGet},
	{"sched_yield", nil, one, gen427, 0, errno(errnoSuccess)},
	{"sock_accept", sig("iii"), one, gen533, gen533, errno(errnoNotsup)},
	{"sock_recv", sig("iiiiii"), one, gen533, gen533, errno(errnoNotsup)},
	{"sock_send", sig("iiiii"), one, gen533, gen533, errno(errnoNotsup)},
	{"sock_shutdown", sig("ii"), one, gen533, gen533, errno(errnoNotsup)},
}

// wasiHost is the host side of one VM's WASI: what its answers depend on.
type wasiHost struct {
	gen int
	// log receives what the module writes to fds 1 (info) and 2 (error),
	// and the errors cpp-host logs itself (fd_seek, fd_close, proc_exit).
	log func(level logLevel, msg string)
	// epoch anchors the monotonic clock.
	epoch time.Time
	// guard refuses host calls cpp-host does not allow in the module's
	// current phase.
	guard *callGuard
}

// logLevel is a proxy-wasm log level (trace 0 … critical 5).
type logLevel int

const (
	logTrace logLevel = 0
	logInfo  logLevel = 2
	logError logLevel = 4
)

// callGuard refuses the host calls cpp-host does not allow in the phase the
// module is in. WasmBase::startVm runs _initialize with a restricted
// callback list, and allocMemory (the host calling the module's
// proxy_on_memory_allocate to copy data in) another; in V8 any other host
// call then traps (restricted_callback), failing the VM's start or the
// callback that made the host copy data.
type callGuard struct {
	phase phase
	gen   int // 0: no restriction (the lenient profile)
}

// phase is what the host is doing with the module.
type phase int

const (
	phaseRunning    phase = iota // a callback: every call allowed
	phaseStarting                // _initialize
	phaseAllocating              // proxy_on_memory_allocate, called by the host
)

// mallocAllowed are the host calls cpp-host allows while the module
// allocates memory for it (allocMemory): the ones a guest allocator logs
// or times with.
var mallocAllowed = map[string]bool{"proxy_log": true, "fd_write": true, "clock_time_get": true}

// check panics, which wazero turns into a trap of the running call, when a
// host function is called in a phase in which cpp-host does not allow it.
// atStart is the generation from which it is allowed during _initialize.
func (g *callGuard) check(module, name string, atStart int) {
	if g == nil || g.gen == 0 {
		return
	}
	switch g.phase {
	case phaseStarting:
		if atStart == 0 || atStart > g.gen {
			panic(fmt.Sprintf("restricted_callback: %s.%s called during _initialize, which Envoy's Wasm host does not allow", module, name))
		}
	case phaseAllocating:
		if !mallocAllowed[name] {
			panic(fmt.Sprintf("restricted_callback: %s.%s called during proxy_on_memory_allocate, which Envoy's Wasm host does not allow", module, name))
		}
	}
}

// alloc calls the module's allocator as the host does, in the allocating
// phase.
func (g *callGuard) alloc(ctx context.Context, fn api.Function, stack []uint64) error {
	prev := g.phase
	g.phase = phaseAllocating
	defer func() { g.phase = prev }()
	return fn.CallWithStack(ctx, stack)
}

// instantiateWASI defines the WASI modules of a profile in r:
// wasi_snapshot_preview1 and wasi_unstable with cpp-host's functions, or
// wazero's own preview1 for the lenient profile.
func instantiateWASI(ctx context.Context, r wazero.Runtime, p Profile, h *wasiHost) error {
	if p == Wazero {
		_, err := wasi_snapshot_preview1.Instantiate(ctx, r)
		return err
	}
	h.gen = p.generation()
	if h.gen == 0 {
		return fmt.Errorf("unknown host profile %q", p)
	}
	if h.epoch.IsZero() {
		h.epoch = time.Now()
	}
	for _, module := range []string{"wasi_snapshot_preview1", "wasi_unstable"} {
		b := r.NewHostModuleBuilder(module)
		for _, f := range wasiFunctions {
			if f.since > h.gen {
				continue
			}
			f, module := f, module
			b = b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, s []uint64) {
				h.guard.check(module, f.name, f.atStart)
				for i, t := range f.params {
					if t == i32 {
						s[i] = uint64(uint32(s[i]))
					}
				}
				f.fn(h, ctx, mod, s)
			}), f.params, f.results).Export(f.name)
		}
		if _, err := b.Instantiate(ctx); err != nil {
			return err
		}
	}
	return nil
}

func wasiArgsSizesGet(_ *wasiHost, _ context.Context, mod api.Module, s []uint64) {
	s[0] = fault(writeU32(mod, s[0], 0) && writeU32(mod, s[1], 0))
}

// The environment of a VM Envoy configures with no environment_variables:
// empty.
func wasiEnvironSizesGet(_ *wasiHost, _ context.Context, mod api.Module, s []uint64) {
	s[0] = fault(writeU32(mod, s[0], 0) && writeU32(mod, s[1], 0))
}

func wasiEnvironGet(_ *wasiHost, _ context.Context, _ api.Module, s []uint64) { s[0] = errnoSuccess }

func wasiClockTimeGet(h *wasiHost, _ context.Context, mod api.Module, s []uint64) {
	var t uint64
	switch s[0] {
	case 0: // realtime
		t = uint64(time.Now().UnixNano())
	case 1: // monotonic
		t = uint64(time.Since(h.epoch).Nanoseconds()) + 1
	default:
		s[0] = errnoNotsup
		return
	}
	s[0] = fault(writeU64(mod, s[2], t))
}

// wasiClockResGet reports a resolution of 1 ns for the two clocks
// clock_time_get answers.
func wasiClockResGet(_ *wasiHost, _ context.Context, mod api.Module, s []uint64) {
	if s[0] != 0 && s[0] != 1 {
		s[0] = errnoNotsup
		return
	}
	s[0] = fault(writeU64(mod, s[1], 1))
}

// wasiFdstatGet describes fds 1 and 2 as cpp-host does: filetype 0, no
// flags, the one right to write; any other fd is EBADF.
func wasiFdstatGet(_ *wasiHost, _ context.Context, mod api.Module, s []uint64) {
	if s[0] != 1 && s[0] != 2 {
		s[0] = errnoBadf
		return
	}
	var b [24]byte
	binary.LittleEndian.PutUint64(b[8:], rightFDWrite)
	// cpp-host does not check this write: success either way.
	_ = mod.Memory().Write(uint32(s[1]), b[:])
	s[0] = errnoSuccess
}

// wasiFdWrite writes fds 1 and 2 to the host's log (1 at info, 2 at error),
// one log line per call without its trailing newline; any other fd is
// EBADF.
func wasiFdWrite(h *wasiHost, _ context.Context, mod api.Module, s []uint64) {
	fd, iovs, n, nwritten := s[0], uint32(s[1]), uint32(s[2]), s[3]
	if fd != 1 && fd != 2 {
		s[0] = errnoBadf
		return
	}
	var b strings.Builder
	m := mod.Memory()
	for i := uint32(0); i < n; i++ {
		ptr, ok1 := m.ReadUint32Le(iovs + 8*i)
		size, ok2 := m.ReadUint32Le(iovs + 8*i + 4)
		if !ok1 || !ok2 {
			s[0] = errnoFault
			return
		}
		if size == 0 {
			continue
		}
		data, ok := m.Read(ptr, size)
		if !ok {
			s[0] = errnoFault
			return
		}
		b.Write(data)
	}
	msg := b.String()
	if len(msg) > 0 && h.log != nil {
		level := logInfo
		if fd == 2 {
			level = logError
		}
		h.log(level, strings.TrimSuffix(msg, "\n"))
	}
	if !m.WriteUint32Le(uint32(nwritten), uint32(len(msg))) {
		s[0] = errnoFault
		return
	}
	s[0] = errnoSuccess
}

// wasiLogAndSucceed is cpp-host's fd_seek and fd_close: it reports the
// call through the context's error hook (Envoy logs it at trace level) and
// answers success, writing nothing.
func wasiLogAndSucceed(name string) func(*wasiHost, context.Context, api.Module, []uint64) {
	return func(h *wasiHost, _ context.Context, _ api.Module, s []uint64) {
		if h.log != nil {
			h.log(logTrace, "wasi_unstable "+name)
		}
		s[0] = errnoSuccess
	}
}

// wasiPollOneoff is the call Go's runtime makes to sleep and to poll its
// timers and fds. Before cpp-host #533 it answers ENOSYS, on which Go
// throws; from #533 it reports no events at once.
func wasiPollOneoff(h *wasiHost, _ context.Context, mod api.Module, s []uint64) {
	if h.gen < gen533 {
		s[0] = errnoNosys
		return
	}
	s[0] = fault(writeU32(mod, s[3], 0))
}

// wasiProcExit reports the call (a trace line in Envoy) and returns:
// cpp-host neither traps nor stops the VM.
func wasiProcExit(h *wasiHost, _ context.Context, _ api.Module, s []uint64) {
	if h.log != nil {
		h.log(logTrace, fmt.Sprintf("wasi_unstable proc_exit %d", uint32(s[0])))
	}
}

func wasiRandomGet(_ *wasiHost, _ context.Context, mod api.Module, s []uint64) {
	ptr, n := uint32(s[0]), uint32(s[1])
	switch {
	case n > maxRandomBytes:
		s[0] = errnoInval
		return
	case n == 0:
		s[0] = errnoSuccess
		return
	}
	buf, ok := mod.Memory().Read(ptr, n)
	if !ok {
		s[0] = errnoFault
		return
	}
	_, _ = rand.Read(buf)
	s[0] = errnoSuccess
}

func writeU32(mod api.Module, ptr uint64, v uint32) bool {
	return mod.Memory().WriteUint32Le(uint32(ptr), v)
}

func writeU64(mod api.Module, ptr uint64, v uint64) bool {
	return mod.Memory().WriteUint64Le(uint32(ptr), v)
}

// fault is cpp-host's answer to a write into guest memory: EFAULT when it
// failed.
func fault(ok bool) uint64 {
	if ok {
		return errnoSuccess
	}
	return errnoFault
}
