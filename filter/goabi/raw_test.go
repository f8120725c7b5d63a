//go:build !wasip1

package goabi

import (
	"testing"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/internal"
)

func TestPairsRoundTrip(t *testing.T) {
	in := [][2]string{{":path", "/a?b=1"}, {"", ""}, {"x-empty", ""}, {"user-agent", "Go-http-client/1.1"}}
	buf := internal.SerializeMap(in)
	var got [][2]string
	it := NewPairs(buf)
	for it.Next() {
		got = append(got, [2]string{string(it.Name), string(it.Value)})
	}
	if it.Malformed || len(got) != len(in) {
		t.Fatalf("got %q (malformed %v), want %q", got, it.Malformed, in)
	}
	for i := range in {
		if got[i] != in[i] {
			t.Errorf("pair %d: got %q, want %q", i, got[i], in[i])
		}
	}
	if it := NewPairs(nil); it.Next() || it.Malformed {
		t.Error("an empty buffer is an empty map")
	}
}

// Every truncation and every corrupted size of a real buffer ends the walk
// without a panic, flagged malformed, after only whole pairs.
func TestPairsMalformed(t *testing.T) {
	buf := internal.SerializeMap([][2]string{{":method", "GET"}, {"accept", "application/json"}})
	for n := 1; n < len(buf); n++ {
		it := NewPairs(buf[:n])
		pairs := 0
		for it.Next() {
			pairs++
		}
		if !it.Malformed {
			t.Errorf("truncated to %d bytes: not flagged malformed (%d pairs)", n, pairs)
		}
	}
	for i := 0; i < 4+8*2; i++ {
		for _, v := range []byte{0xff, 0x7f, 0x80} {
			c := append([]byte(nil), buf...)
			c[i] = v
			it := NewPairs(c)
			for it.Next() {
				if len(it.Name)+len(it.Value) > len(c) {
					t.Fatalf("byte %d = %#x: views past the buffer", i, v)
				}
			}
		}
	}
}
