// Package wasmhost loads the compiled meshward filter (or any proxy-wasm
// module built with upstream Go's -buildmode=c-shared) into the SDK's host
// emulator, so tests, benchmarks and replay run exactly the bytes Envoy runs.
//
// A c-shared module is a WASI reactor: it exports _initialize, which must run
// before any other export. The SDK's emulator (proxytest.NewWasmVMContext)
// only runs _start, the entry point of a WASI command. Load therefore renames
// the _initialize export to _start in an in-memory copy; the file on disk, the
// one given to Envoy, is never touched.
package wasmhost

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
)

// Export is one entry of a module's export section.
type Export struct {
	Name string
	Kind byte // 0 function, 1 table, 2 memory, 3 global
}

// Export kinds of the WebAssembly binary format.
const (
	KindFunc   byte = 0
	KindTable  byte = 1
	KindMemory byte = 2
	KindGlobal byte = 3
)

var (
	// ErrNotWasm is returned for input that is not a WebAssembly binary.
	ErrNotWasm = errors.New("not a WebAssembly binary")
	// ErrMalformed is returned when a section runs past the end of the input.
	ErrMalformed = errors.New("malformed WebAssembly binary")
	// ErrNotReactor is returned when a module has no _initialize export.
	ErrNotReactor = errors.New("module does not export _initialize (build it with -buildmode=c-shared)")
)

var wasmHeader = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

const exportSectionID = 7

// Exports lists the exports of a WebAssembly module.
func Exports(wasm []byte) ([]Export, error) {
	_, body, err := findSection(wasm, exportSectionID)
	if err != nil || body == nil {
		return nil, err
	}
	return parseExports(body)
}

// AsCommand returns a copy of a reactor module whose _initialize export is
// renamed _start, so that a host which only knows WASI commands initialises
// the Go runtime before calling any other export.
func AsCommand(wasm []byte) ([]byte, error) {
	start, body, err := findSection(wasm, exportSectionID)
	if err != nil {
		return nil, err
	}
	if body == nil {
		return nil, ErrNotReactor
	}
	exports, err := parseExports(body)
	if err != nil {
		return nil, err
	}
	found := false
	for i := range exports {
		switch exports[i].Name {
		case "_start":
			return nil, fmt.Errorf("module already exports _start: it is a WASI command, not a c-shared reactor")
		case "_initialize":
			exports[i].Name = "_start"
			found = true
		}
	}
	if !found {
		return nil, ErrNotReactor
	}
	newBody, err := encodeExports(body, exports)
	if err != nil {
		return nil, err
	}
	sectionEnd := sectionEndOffset(wasm, start, body)
	var out bytes.Buffer
	out.Grow(len(wasm) + 8)
	out.Write(wasm[:start])
	out.WriteByte(exportSectionID)
	out.Write(binary.AppendUvarint(nil, uint64(len(newBody))))
	out.Write(newBody)
	out.Write(wasm[sectionEnd:])
	return out.Bytes(), nil
}

// NewVM compiles a c-shared proxy-wasm module for the SDK's emulator.
// Close the returned VM when done.
func NewVM(wasm []byte) (proxytest.WasmVMContext, error) {
	cmd, err := AsCommand(wasm)
	if err != nil {
		return nil, err
	}
	return proxytest.NewWasmVMContext(cmd)
}

// LoadVM reads a module from disk and compiles it with NewVM.
func LoadVM(path string) (proxytest.WasmVMContext, error) {
	wasm, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vm, err := NewVM(wasm)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return vm, nil
}

// LoadDirect reads a module from disk and runs it on goabi's lean wazero
// binding (wazerohost) instead of proxytest's: same emulator, same module,
// but host calls cost what a native host charges rather than a reflective
// call each, and WASI answers as the profile's Envoy does, so it is what
// tests, benchmarks and replay use.
func LoadDirect(path string, profile wazerohost.Profile) (*wazerohost.VM, error) {
	wasm, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vm, err := wazerohost.NewWithCache(wasm, CompilationCache(), profile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return vm, nil
}

// findSection returns the offset of the id byte of the first section with the
// given id and that section's body, or a nil body when there is none.
func findSection(wasm []byte, id byte) (int, []byte, error) {
	if len(wasm) < len(wasmHeader) || !bytes.Equal(wasm[:len(wasmHeader)], wasmHeader) {
		return 0, nil, ErrNotWasm
	}
	off := len(wasmHeader)
	for off < len(wasm) {
		secStart := off
		secID := wasm[off]
		off++
		size, n := binary.Uvarint(wasm[off:])
		if n <= 0 || size > uint64(len(wasm)-off-n) {
			return 0, nil, fmt.Errorf("%w: section %d at offset %d", ErrMalformed, secID, secStart)
		}
		off += n
		if secID == id {
			return secStart, wasm[off : off+int(size)], nil
		}
		off += int(size)
	}
	return 0, nil, nil
}

func sectionEndOffset(wasm []byte, start int, body []byte) int {
	_, n := binary.Uvarint(wasm[start+1:])
	return start + 1 + n + len(body)
}

func parseExports(body []byte) ([]Export, error) {
	count, n := binary.Uvarint(body)
	if n <= 0 {
		return nil, fmt.Errorf("%w: export count", ErrMalformed)
	}
	off := n
	out := make([]Export, 0, min(count, 1<<16))
	for i := uint64(0); i < count; i++ {
		nameLen, n := binary.Uvarint(body[off:])
		if n <= 0 || nameLen > uint64(len(body)-off-n) {
			return nil, fmt.Errorf("%w: export %d name", ErrMalformed, i)
		}
		off += n
		name := string(body[off : off+int(nameLen)])
		off += int(nameLen)
		if off >= len(body) {
			return nil, fmt.Errorf("%w: export %q kind", ErrMalformed, name)
		}
		kind := body[off]
		off++
		_, n = binary.Uvarint(body[off:])
		if n <= 0 {
			return nil, fmt.Errorf("%w: export %q index", ErrMalformed, name)
		}
		off += n
		out = append(out, Export{Name: name, Kind: kind})
	}
	return out, nil
}

// encodeExports re-encodes an export section with new names, keeping each
// entry's kind and index bytes from the original body.
func encodeExports(body []byte, exports []Export) ([]byte, error) {
	count, n := binary.Uvarint(body)
	if n <= 0 || count != uint64(len(exports)) {
		return nil, fmt.Errorf("%w: export count", ErrMalformed)
	}
	off := n
	out := binary.AppendUvarint(nil, count)
	for i := range exports {
		nameLen, n := binary.Uvarint(body[off:])
		off += n + int(nameLen)
		_, m := binary.Uvarint(body[off+1:])
		desc := body[off : off+1+m]
		off += 1 + m
		out = binary.AppendUvarint(out, uint64(len(exports[i].Name)))
		out = append(out, exports[i].Name...)
		out = append(out, desc...)
	}
	return out, nil
}
