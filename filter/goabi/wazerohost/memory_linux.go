//go:build !wasip1 && linux

package wazerohost

import (
	"context"
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// reserveBytes is the address space reserved for one module's linear memory.
// Pages cost nothing until the guest touches them.
const reserveBytes = 1 << 30

// withMemory makes modules instantiated with ctx keep their linear memory in
// a reserved mapping that grows in place. wazero's default grows a Go slice
// by copying the whole memory each time, which a Go guest (whose heap grows
// in steps) pays for again and again, on the Go heap.
func withMemory(ctx context.Context) context.Context {
	return experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(func(cap, max uint64) experimental.LinearMemory {
		return &mappedMemory{max: max}
	}))
}

type mappedMemory struct {
	buf []byte // the whole mapping; the memory is buf[:size]
	max uint64
}

func (m *mappedMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size <= uint64(len(m.buf)) {
		return m.buf[:size]
	}
	// First use, or more than the reservation: map (more) and copy once.
	n := max(uint64(reserveBytes), size)
	b, err := syscall.Mmap(-1, 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	if m.buf != nil {
		copy(b, m.buf)
		_ = syscall.Munmap(m.buf)
	}
	m.buf = b
	return m.buf[:size]
}

func (m *mappedMemory) Free() {
	if m.buf != nil {
		_ = syscall.Munmap(m.buf)
		m.buf = nil
	}
}
