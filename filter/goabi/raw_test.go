//go:build !wasip1

package goabi

import (
	"encoding/binary"
	"fmt"
	"reflect"
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

// refPairs decodes a serialized header map the plain way, as the layout in
// Pairs' comment says, with every bound checked in wide integers: the pairs
// that are whole, in order, and whether the walk stops early.
func refPairs(buf []byte) (pairs [][2]string, malformed bool) {
	if len(buf) == 0 {
		return nil, false
	}
	if len(buf) < 4 {
		return nil, true
	}
	n := uint64(binary.LittleEndian.Uint32(buf))
	if 4+8*n > uint64(len(buf)) {
		return nil, true
	}
	data := 4 + 8*n
	for i := uint64(0); i < n; i++ {
		ks := uint64(binary.LittleEndian.Uint32(buf[4+8*i:]))
		vs := uint64(binary.LittleEndian.Uint32(buf[4+8*i+4:]))
		// name, NUL, value, NUL
		if data+ks+1+vs+1 > uint64(len(buf)) {
			return pairs, true
		}
		name := string(buf[data : data+ks])
		value := string(buf[data+ks+1 : data+ks+1+vs])
		pairs = append(pairs, [2]string{name, value})
		data += ks + 1 + vs + 1
	}
	return pairs, false
}

// walk returns what a Pairs walk over buf yields.
func walk(buf []byte) (pairs [][2]string, malformed bool) {
	it := NewPairs(buf)
	for it.Next() {
		pairs = append(pairs, [2]string{string(it.Name), string(it.Value)})
	}
	return pairs, it.Malformed
}

// Every truncation and every corrupted size of a real buffer yields exactly
// the pairs the plain decoder finds whole, in order, and is flagged
// malformed exactly when the plain decoder stops early.
func TestPairsMalformed(t *testing.T) {
	buf := internal.SerializeMap([][2]string{{":method", "GET"}, {"accept", "application/json"}, {"x", ""}})
	check := func(what string, b []byte) {
		t.Helper()
		got, gotBad := walk(b)
		want, wantBad := refPairs(b)
		if !reflect.DeepEqual(got, want) || gotBad != wantBad {
			t.Errorf("%s: walked %q (malformed %v), want %q (malformed %v)", what, got, gotBad, want, wantBad)
		}
	}
	check("whole", buf)
	for n := 0; n < len(buf); n++ {
		check(fmt.Sprintf("truncated to %d bytes", n), buf[:n])
	}
	sizes := 4 + 8*3 // the count and every name and value size
	for i := 0; i < sizes; i++ {
		for _, v := range []byte{0, 1, 2, 0x7f, 0x80, 0xff} {
			c := append([]byte(nil), buf...)
			c[i] = v
			check(fmt.Sprintf("byte %d = %#x", i, v), c)
		}
	}
	// Sizes that shift a pair inside the buffer rather than past its end.
	c := append([]byte(nil), buf...)
	binary.LittleEndian.PutUint32(c[4:], 1) // ":method" read as ":"
	check("a shorter first name", c)
}
