package models

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math/bits"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// Collisions of hashBytes, built as an attacker would: every step of the
// hash inverts, so eight bytes after any prefix make the whole hash to any
// value.

// inverse64 returns the inverse of an odd a modulo 2^64.
func inverse64(a uint64) uint64 {
	x := a
	for i := 0; i < 6; i++ {
		x *= 2 - a*x
	}
	return x
}

// unshiftXor inverts x ^= x >> s.
func unshiftXor(x uint64, s uint) uint64 {
	r := x
	for i := 0; i < 64/int(s)+1; i++ {
		r = x ^ r>>s
	}
	return r
}

// collide returns prefix, padded with pad to a multiple of eight bytes,
// then eight bytes that make hashBytes(seed, ·) equal target.
func collide(seed, target uint64, prefix []byte, pad byte) []byte {
	b := append([]byte(nil), prefix...)
	for len(b)%8 != 0 {
		b = append(b, pad)
	}
	h := seed
	for r := b; len(r) >= 8; r = r[8:] {
		h = bits.RotateLeft64(h^binary.LittleEndian.Uint64(r)*hashK1, 31) * hashK2
	}
	n := uint64(len(b) + 8)
	x := unshiftXor(target, 31) * inverse64(0x94D049BB133111EB)
	x = unshiftXor(x, 27) * inverse64(0xBF58476D1CE4E5B9)
	x = unshiftXor(x, 30)
	// The empty tail's step, then the free block's.
	x = bits.RotateLeft64(x*inverse64(hashK2), -31) ^ (n<<56)*hashK1
	w := (bits.RotateLeft64(x*inverse64(hashK2), -31) ^ h) * inverse64(hashK1)
	return binary.LittleEndian.AppendUint64(b, w)
}

// TestCollidingKeysAreNotKnown: a caller, a path and parameter names made
// to hash like ones the section learned are met as new, not taken for the
// learned ones (and a path so made is read by the content model).
func TestCollidingKeysAreNotKnown(t *testing.T) {
	m := listFixture(t, 1)
	w := m.Workload("shop")
	const payload = "x' UNION SELECT password FROM users--"

	// A caller.
	src := string(collide(hashSeed, hashString(hashSeed, "caller-1"), []byte("evil "+payload), ' '))
	if hashString(hashSeed, src) != hashString(hashSeed, "caller-1") {
		t.Fatal("the crafted caller does not collide")
	}
	if _, ok := w.sourceOf(src); ok {
		t.Error("a caller made to collide with caller-1 is known")
	}

	// A path whose template collides with /items/{num}'s.
	want := hashBytes(methodSeed("GET"), []byte("/items/{num}"))
	var path []byte
	for pad := 0; ; pad++ {
		prefix := append([]byte("/"+payload), bytes.Repeat([]byte{' '}, 8*pad)...)
		path = collide(methodSeed("GET"), want, prefix, ' ')
		if !bytes.ContainsAny(path[len(path)-8:], "/?") {
			break
		}
	}
	if got := hashBytes(methodSeed("GET"), []byte(Template(string(path)))); got != want {
		t.Fatalf("the crafted path's template %q does not collide", Template(string(path)))
	}
	if _, ok := w.routeOf("GET", []byte(Template(string(path)))); ok {
		t.Error("a path made to collide with /items/{num} is a known route")
	}
	v := w.Score(&Request{Method: "GET", Path: string(path), Source: "caller-1", Headers: []Header{{Name: "user-agent", Value: "shop-client/1.2"}}})
	if v.Parts[PartRoute] == 0 {
		t.Errorf("the colliding path is not a new route: %+v", v)
	}

	// A query parameter's name and a header's.
	ri, ok := w.routeOf("GET", []byte("/items/{num}"))
	if !ok {
		t.Fatal("/items/{num} was not learned")
	}
	qname := collide(uint64(ri)*hashMix^hashSeed, paramKey(ri, []byte("sort")), []byte("sort"+payload), ' ')
	if paramKey(ri, qname) != paramKey(ri, []byte("sort")) {
		t.Fatal("the crafted parameter name does not collide")
	}
	hname := collide(headerKeySeed, hashBytes(headerKeySeed, []byte("user-agent")), []byte("x-evil"), '-')
	for _, p := range []param{{name: qname, value: []byte("asc")}, {name: hname, value: []byte("shop-client/1.2"), header: true}} {
		if pm := w.paramOf(&p, ri, true); pm != nil {
			t.Errorf("the name %q made to collide is taken for %q's", p.name, pm.Name)
		}
	}
	// The same through scoring, which looks names up on its own path.
	for _, r := range []Request{
		{Method: "GET", Path: "/items/7", Query: url.QueryEscape(string(qname)) + "=asc&page=3", Source: "caller-1",
			Headers: []Header{{Name: "user-agent", Value: "shop-client/1.2"}}},
		{Method: "GET", Path: "/items/7", Query: "sort=asc&page=3", Source: "caller-1",
			Headers: []Header{{Name: "user-agent", Value: "shop-client/1.2"}, {Name: string(hname), Value: "shop-client/1.2"}}},
	} {
		if v := w.Score(&r); v.Parts[PartNames] == 0 {
			t.Errorf("%s %v: a name made to collide is not new: %+v", r.Query, r.Headers, v)
		}
	}

	// A value of an enumerated parameter: sort took asc and desc.
	sort := w.paramOf(&param{name: []byte("sort")}, ri, true)
	if sort == nil || len(sort.Values) != 2 {
		t.Fatalf("sort is not enumerated as asc, desc: %+v", sort)
	}
	value := collide(hashSeed, hashBytes(hashSeed, []byte("asc")), []byte(payload), ' ')
	if !sort.knownValue([]byte("asc")) || sort.knownValue(value) {
		t.Errorf("knownValue(asc) = %v, knownValue(%q, made to collide with asc) = %v",
			sort.knownValue([]byte("asc")), value, sort.knownValue(value))
	}
	r := Request{Method: "GET", Path: "/items/7", Query: "sort=" + url.QueryEscape(string(value)) + "&page=3", Source: "caller-1",
		Headers: []Header{{Name: "user-agent", Value: "shop-client/1.2"}}}
	v = w.Score(&r)
	if v.Score <= m.Meta.Threshold || v.Parts[PartValues] == 0 {
		t.Errorf("a UNION SELECT made to hash like asc scores %.3f (values part %.2f), want flagged by its value", v.Score, v.Parts[PartValues])
	}
}

// TestTrainingKeepsEnumeratedValues: a parameter's values are kept with
// their hashes, through the codec; a value that hashes like another one
// makes the parameter not enumerated (abuse: training traffic cannot slip
// a payload in as a known value), and a model whose values are out of
// their hashes' order is refused.
func TestTrainingKeepsEnumeratedValues(t *testing.T) {
	train := func(extra string) *ParamModel {
		tr := newTestTrainer(t)
		for i := 0; i < 400; i++ {
			v := []string{"asc", "desc"}[i%2]
			if i == 200 && extra != "" {
				v = extra
			}
			tr.Observe(&Request{Method: "GET", Path: "/items", Query: "sort=" + url.QueryEscape(v), Source: "a", Destination: "shop"})
		}
		w := throughCodec(t, tr).Workload("shop")
		ri, _ := w.routeOf("GET", []byte("/items"))
		return w.paramOf(&param{name: []byte("sort")}, ri, true)
	}
	pm := train("")
	if pm == nil || !slices.Equal(pm.Values, sortedByHash("asc", "desc")) {
		t.Fatalf("values after the codec: %+v", pm)
	}
	if pm := train(string(collide(hashSeed, hashBytes(hashSeed, []byte("asc")), []byte("x' OR 1=1--"), ' '))); pm == nil || len(pm.Enum) != 0 {
		t.Errorf("a value colliding with asc left sort enumerated: %+v", pm)
	}

	m := listFixture(t, 1)
	w := m.Workload("shop")
	for i := range w.Params {
		if p := &w.Params[i]; len(p.Values) == 2 {
			p.Values[0], p.Values[1] = p.Values[1], p.Values[0]
			b, err := Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Decode(b); err == nil || !strings.Contains(err.Error(), "enum") {
				t.Errorf("a model with values out of order decoded: %v", err)
			}
			return
		}
	}
	t.Fatal("the fixture has no parameter of two values")
}

// sortedByHash orders values as a model keeps them.
func sortedByHash(vs ...string) []string {
	slices.SortFunc(vs, func(a, b string) int {
		return cmp.Compare(hashBytes(hashSeed, []byte(a)), hashBytes(hashSeed, []byte(b)))
	})
	return vs
}
