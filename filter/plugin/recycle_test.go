package plugin

import (
	"reflect"
	"testing"
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi"

	"github.com/meshward/meshward/models"
)

// TestRecycledContextIsFresh: a finished stream's context, reset for reuse,
// is a new context in every field (reflection finds fields added later),
// but for what reset keeps on purpose: the header slice's and the body
// prefix's backing arrays, the body tail's buffer, the scratch a body is read with,
// the reasons behind a zero count, the verdict's parts (scoring clears them
// before it reads any), and the host buffers' walker.
func TestRecycledContextIsFresh(t *testing.T) {
	p := &pluginContext{}
	h := &httpContext{plugin: p}
	// Every field set to something other than its zero value.
	fill(t, reflect.ValueOf(h).Elem(), "httpContext")
	h.plugin = p
	h.bufs.n = 0 // hostBuffers.release hands back only what it was given
	h.reset()
	h.pooled = false
	h.req.Headers, h.req.Body, h.scratch = nil, nil, nil
	h.verdict.Reasons = [models.MaxReasons]models.Reason{}
	h.verdict.Parts = [models.NParts]float64{}
	h.verdict.Codes = [models.NParts]models.ReasonCode{}
	h.bufs.pairs = goabi.Pairs{}
	h.bufs.b = [4][]byte{}
	if h.tail.Active() {
		t.Error("the body's tail is still being read")
	}
	h.tail = models.BodyTail{} // Reset keeps its buffer
	fresh := httpContext{plugin: p}
	if !reflect.DeepEqual(*h, fresh) {
		t.Errorf("reset context differs from a new one:\n got %+v\nwant %+v", *h, fresh)
	}
}

// fill sets every settable field of v, recursively, to a non-zero value.
func fill(t *testing.T, v reflect.Value, path string) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if f := v.Field(i); f.CanSet() {
				fill(t, f, path+"."+v.Type().Field(i).Name)
			} else {
				fill(t, reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem(), path+"."+v.Type().Field(i).Name)
			}
		}
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			fill(t, v.Index(i), path)
		}
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Func, reflect.Chan:
		// Left nil: a pointer field of the context is its plugin, set by hand.
	default:
		t.Fatalf("%s: cannot fill a %s", path, v.Kind())
	}
}
