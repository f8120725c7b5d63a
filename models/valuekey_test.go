package models

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// SipHash-2-4 answers as its reference does: the vectors of the paper
// (key 00..0f; messages empty and 00..0e).
func TestSipHashVectors(t *testing.T) {
	k0, k1 := uint64(0x0706050403020100), uint64(0x0f0e0d0c0b0a0908)
	var m [15]byte
	for i := range m {
		m[i] = byte(i)
	}
	for _, c := range []struct {
		m    []byte
		want uint64
	}{{nil, 0x726fdb47dd0e0e31}, {m[:], 0xa129ca6149be45e5}} {
		if got := sipHash(k0, k1, c.m); got != c.want {
			t.Errorf("SipHash of %x: %x, want %x", c.m, got, c.want)
		}
	}
}

func testKey(t testing.TB, s string) ValueKey {
	t.Helper()
	k, err := ParseValueKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const (
	keyA = "000102030405060708090a0b0c0d0e0f"
	keyB = "f0e0d0c0b0a090807060504030201000"
)

func TestParseValueKey(t *testing.T) {
	k, kb := testKey(t, keyA), testKey(t, keyB)
	if k.Hex() != keyA || !k.Set() || k.ID() == 0 || k.ID() == kb.ID() {
		t.Errorf("key %s: reads back %s, set %v, id %x", keyA, k.Hex(), k.Set(), k.ID())
	}
	// Printed by mistake, a key (or what holds one) shows its ID only.
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		holder := struct{ Key ValueKey }{k}
		if out := fmt.Sprintf(f, holder); strings.Contains(out, keyA) || strings.Contains(out, fmt.Sprint(k.k0)) || !strings.Contains(out, fmt.Sprintf("%08x", k.ID())) {
			t.Errorf("%s of a key's holder: %s", f, out)
		}
	}
	var none ValueKey
	if none.Set() || none.ID() != 0 {
		t.Error("the zero key is set, or has an id")
	}
	for in, want := range map[string]string{
		"":                                   "want 32 hex digits",
		"0001":                               "want 32 hex digits",
		"zz0102030405060708090a0b0c0d0e0f":   "not hex",
		"00000000000000000000000000000000":   "all zeros",
		"000102030405060708090a0b0c0d0e0f00": "want 32 hex digits",
	} {
		if _, err := ParseValueKey(in); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "value key") {
			t.Errorf("%q: %v, want an error saying %q", in, err, want)
		}
	}
}

// A record's query and form values of at most MaxDigestedValue bytes carry
// the mark of their digest before their shape, the digest of the value as
// scoring decodes it; longer ones do not; without a key, nothing changes.
// The trainer reads the marks off (the shapes learned are the same).
func TestShapesCarryDigests(t *testing.T) {
	k := testKey(t, keyA)
	long := strings.Repeat("x", MaxDigestedValue+1)
	q := "a=red&b=" + long + "&c=two+words%21&flag&d=&e=" + strings.Repeat("y", MaxDigestedValue)
	got := string(AppendShapeQueryDigest(nil, q, &k))
	mark := func(v string) string { return string(appendDigestMark(nil, k.Digest([]byte(v)))) }
	want := "a=" + mark("red") + "aaa&b=" + ShapeQuery("b=" + long)[2:] + "&c=" + mark("two words!") + ShapeQuery("c=two+words%21")[2:] +
		"&flag&d=" + mark("") + "&e=" + mark(strings.Repeat("y", MaxDigestedValue)) + strings.Repeat("a", MaxDigestedValue)
	if got != want {
		t.Fatalf("shaped with digests:\n got %s\nwant %s", got, want)
	}
	if plain := string(AppendShapeQueryDigest(nil, q, nil)); plain != ShapeQuery(q) {
		t.Errorf("without a key: %s, want %s", plain, ShapeQuery(q))
	}
	if strings.Contains(ShapeQuery("a=~0123456789abcdef~"), "~") {
		t.Error("a shape holds a bare '~'")
	}

	// Read back as the trainer reads a record: the marks come off, their
	// digests go with the values, the lengths are the values'.
	r := Request{Method: "GET", Path: "/x", Query: got, marked: true}
	var s paramScratch
	s.extract(&r)
	plainR := Request{Method: "GET", Path: "/x", Query: ShapeQuery(q)}
	var ps paramScratch
	ps.extract(&plainR)
	if s.n != ps.n {
		t.Fatalf("%d parameters read, %d without marks", s.n, ps.n)
	}
	for i := 0; i < s.n; i++ {
		p, pp := &s.params[i], &ps.params[i]
		if !bytes.Equal(p.value, pp.value) || p.full != pp.full {
			t.Errorf("%s: %q (%d) read, %q (%d) without marks", p.name, p.value, p.full, pp.value, pp.full)
		}
		if wantVD := len(pp.value) <= MaxDigestedValue && string(p.name) != "flag"; p.hasVD != wantVD {
			t.Errorf("%s: digest read %v, want %v", p.name, p.hasVD, wantVD)
		}
	}
	if d := s.params[0].vd; d != k.Digest([]byte("red")) {
		t.Errorf("a's digest %x, want red's", d)
	}
	// A request that is not a record keeps its values as they are.
	r.marked = false
	s.extract(&r)
	if !bytes.HasPrefix(s.params[0].value, []byte("~")) || s.params[0].hasVD {
		t.Errorf("a request judged live lost its value's mark: %q", s.params[0].value)
	}
}

// Abuse: a request of many short values cannot make its record outgrow
// the collector's bounds: the first MaxDigestMarks values of the query, and
// of the body, carry a mark, the rest none; a body of the most marks and the
// widest shapes stays within MaxShippedBody.
func TestDigestMarksAreBounded(t *testing.T) {
	k := testKey(t, keyA)
	q := strings.Repeat("a=1&", 200)
	if n := strings.Count(string(AppendShapeQueryDigest(nil, q, &k)), "~") / 2; n != MaxDigestMarks {
		t.Errorf("a query of 200 short values carries %d marks, want %d", n, MaxDigestMarks)
	}
	for _, body := range []string{strings.Repeat("a=&", 2000), strings.Repeat("a=!!!!!!!!!!!!!!!!!!!!!!!&", 400), strings.Repeat("%21", 3000)} {
		r := Request{Method: "POST", Path: "/x", Body: []byte(body),
			Headers: []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}}
		if n := len(ShapeBodyDigest(&r, &k)); n > MaxShippedBody {
			t.Errorf("a body of %d bytes ships %d, over MaxShippedBody %d", len(body), n, MaxShippedBody)
		}
	}
}

// digestTrain trains as the control plane does on the records of filters
// with value key k (trainer told key's ID), through the codec, the model
// then scoring with k as a filter would.
func digestTrain(t *testing.T, k ValueKey, trainerKey uint32, n int, req func(i int) Request) *Model {
	t.Helper()
	cfg := ShapedTrainConfig()
	cfg.ValueKeyID = trainerKey
	tr, err := NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r := req(i)
		s := ShapeRequestDigest(&r, &k)
		tr.Observe(&s)
	}
	m := throughCodec(t, tr)
	m.SetValueKey(k)
	return m
}

func shopRequest(q string) Request {
	return Request{Method: "POST", Path: "/order", Source: "s", Destination: "d",
		Headers: []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}, Body: []byte(q)}
}

// A closed field of short values is enumerated by its digests: a known
// value is normal without being read, a value never sent pays a new value,
// even one of a known value's shape and length (same-length tampering,
// which shapes cannot tell). An open field and a field with long values
// are not; nor is any field when the trainer is told no key.
func TestDigestsEnumerateClosedFields(t *testing.T) {
	k := testKey(t, keyA)
	colours := []string{"red", "blue", "green", "lights"}
	req := func(i int) Request {
		return shopRequest("colour=" + colours[i%4] + "&note=" + fmt.Sprint("n", i) + "&sku=" + strings.Repeat("9", 30) + fmt.Sprint(i%3))
	}
	m := digestTrain(t, k, k.ID(), 2000, req)
	w := m.Workload("d")
	if w.ValueKeyID != k.ID() {
		t.Fatalf("workload value key id %x, want %x", w.ValueKeyID, k.ID())
	}
	colour := paramNamed(w, "colour")
	if colour == nil || !colour.HashEnum || len(colour.Enum) != 4 || len(colour.Values) != 0 {
		t.Fatalf("colour: want 4 digests enumerated, got %+v", colour)
	}
	for _, name := range []string{"note", "sku"} {
		if p := paramNamed(w, name); p == nil || p.HashEnum {
			t.Errorf("%s is enumerated by digests: %+v", name, p)
		}
	}
	score := func(c string) Verdict {
		r := shopRequest("colour=" + c + "&note=n5&sku=" + strings.Repeat("9", 31))
		return w.Score(&r)
	}
	known, tampered := score("lights"), score("lightx")
	if hasReason(known, ReasonNewValue) {
		t.Errorf("a known colour: %v, values part %.2f", known.ReasonList(), known.Parts[PartValues])
	}
	if !hasReason(tampered, ReasonNewValue) || tampered.Score <= known.Score {
		t.Errorf("lightx (the shape of lights): score %.3f %v; lights %.3f", tampered.Score, tampered.ReasonList(), known.Score)
	}
	// Graduate's evidence judges the values as scoring does.
	r := shopRequest("colour=lightx")
	v := w.Score(&r)
	if at, worst := w.valueEvidence(&r, new(Scratch)); worst != v.Parts[PartValues] || at < 0 {
		t.Errorf("evidence %v (parameter %d), values part %v", worst, at, v.Parts[PartValues])
	}

	// A filter with another key (or none) does not look values up: they
	// are judged by their shapes, not all as new.
	for _, other := range []ValueKey{testKey(t, keyB), {}} {
		if n := m.SetValueKey(other); n != len(m.Workloads) {
			t.Errorf("key %v: %d workloads under another key, want all %d", other.Set(), n, len(m.Workloads))
		}
		if v := score("lights"); hasReason(v, ReasonNewValue) {
			t.Errorf("key %v: a known colour is a new value: %v", other.Set(), v.ReasonList())
		}
	}

	// A trainer told no key learns no digest (the marks still come off).
	m = digestTrain(t, k, 0, 2000, req)
	w = m.Workload("d")
	if colour := paramNamed(w, "colour"); colour == nil || colour.HashEnum || w.ValueKeyID != 0 {
		t.Errorf("without a key id: colour %+v, workload key id %x", colour, w.ValueKeyID)
	}
	if p := paramNamed(w, "colour"); p != nil && p.ShapeEnum {
		for _, s := range p.Values {
			if strings.Contains(s, "~") {
				t.Errorf("a mark was learned as a shape: %q", s)
			}
		}
	}
}

// Abuse: a filter judges a request's values as they are: a value made to
// look like a record's mark (a known value's digest, then an injection) is
// not known, and its mark is read as bytes.
func TestLiveValuesAreNotMarks(t *testing.T) {
	k := testKey(t, keyA)
	m := digestTrain(t, k, k.ID(), 400, func(i int) Request { return shopRequest("colour=" + []string{"red", "blue"}[i%2]) })
	w := m.Workload("d")
	forged := string(appendDigestMark(nil, k.Digest([]byte("red")))) + "' OR 1=1"
	r := shopRequest("colour=" + url.QueryEscape(forged))
	v := w.Score(&r)
	plain := shopRequest("colour=red")
	if v.Score <= w.Score(&plain).Score || !hasReason(v, ReasonNewValue) && !hasReason(v, ReasonValueLength) && !hasReason(v, ReasonValueShape) && !hasReason(v, ReasonKeywords) {
		t.Errorf("a forged mark: score %.3f %v", v.Score, v.ReasonList())
	}
}

// Abuse: records are a workload's word. Marks on more distinct values than
// an enumeration holds, a value without one, or a mark on a long value end
// the field's enumeration; a malformed mark is read as bytes; a model whose
// digests name no key, are out of order, or belong to a header is refused
// with the place named.
func TestDigestEnumerationIsBounded(t *testing.T) {
	k := testKey(t, keyA)
	cfg := ShapedTrainConfig()
	cfg.ValueKeyID = k.ID()
	tr, err := NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mark := func(i int) string { return string(appendDigestMark(nil, uint64(i)*0x9e3779b97f4a7c15)) }
	for i := 0; i < 4000; i++ {
		q := []string{
			"many=" + mark(i%(maxEnum+1)) + "aa",
			"some=" + mark(i%3) + "aa",
			"bare=" + mark(i%3) + "aa",
			"long=" + mark(i%3) + strings.Repeat("a", MaxDigestedValue+1),
			"bad=~0123456789abcdeX~aa",
		}
		if i == 7 {
			q[2] = "bare=aa"
		}
		r := Request{Method: "GET", Path: "/x", Query: strings.Join(q, "&"), Source: "s", Destination: "d", ValueKeyID: k.ID()}
		tr.Observe(&r)
	}
	m := throughCodec(t, tr)
	w := m.Workload("d")
	for name, want := range map[string]bool{"many": false, "some": true, "bare": false, "long": false, "bad": false} {
		if p := paramNamed(w, name); p == nil || p.HashEnum != want {
			t.Errorf("%s: enumerated by digests %v, want %v (%+v)", name, p != nil && p.HashEnum, want, p)
		}
	}
	if bad := paramNamed(w, "bad"); bad.LenMean != float64(len("~0123456789abcdeX~aa")) {
		t.Errorf("a malformed mark is not read as bytes: length %v", bad.LenMean)
	}

	// The codec: the enumeration as written is count 3, kind 2, then the
	// digests, in the workload's part.
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	some := paramNamed(w, "some")
	enum := []byte{3, enumDigests}
	for _, d := range some.Enum {
		enum = binary.LittleEndian.AppendUint64(enum, d)
	}
	at := bytes.Index(b[headerSize:], enum)
	if at < 0 {
		t.Fatal("the enumeration's bytes are not found")
	}
	swapped := bytes.Clone(b[headerSize:])
	copy(swapped[at+2:], binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, some.Enum[1]), some.Enum[0]))
	header := bytes.Clone(b[headerSize:])
	for _, c := range []struct {
		name string
		p    []byte
		want string
	}{
		{"out of order", swapped, "digests out of order"},
		{"no key", bytes.Replace(b[headerSize:], binary.AppendUvarint(nil, uint64(k.ID())), []byte{0}, 1), "names no value key"},
		{"kind 3", bytes.Replace(header, enum, append([]byte{3, 3}, enum[2:]...), 1), "enum kind"},
	} {
		bad, err := seal(kindMesh, c.p, MaxMeshBytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(bad); !errors.Is(err, ErrModelFormat) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

// A key's rotation: records whose marks were made with another key than
// the trainer's (or with none) teach no digest and end no enumeration, and
// a record judged against the model reads its marks only when they were
// made with the key of the model's digests; so while filters move from one
// key to the next, the records of both change nothing.
func TestRecordsOfAnotherKeyTeachNothing(t *testing.T) {
	a, b := testKey(t, keyA), testKey(t, keyB)
	cfg := ShapedTrainConfig()
	cfg.ValueKeyID = b.ID() // the new key
	tr, err := NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	colours := []string{"red", "blue", "green"}
	for i := 0; i < 3000; i++ {
		r := shopRequest("colour=" + colours[(i/3)%3] + "&qty=" + fmt.Sprint(i%4))
		var s Request
		switch i % 3 {
		case 0:
			s = ShapeRequestDigest(&r, &a) // filters still on the old key
		case 1:
			s = ShapeRequest(&r) // and on none
		default:
			s = ShapeRequestDigest(&r, &b)
		}
		tr.Observe(&s)
	}
	m := throughCodec(t, tr)
	w := m.Workload("d")
	colour := paramNamed(w, "colour")
	if colour == nil || !colour.HashEnum || len(colour.Enum) != 3 || w.ValueKeyID != b.ID() {
		t.Fatalf("colour: want the 3 digests of key B enumerated, got %+v (workload key id %x, B's %x)", colour, w.ValueKeyID, b.ID())
	}
	for _, c := range colours {
		if _, ok := colour.enumSet.get(b.Digest([]byte(c))); !ok {
			t.Errorf("%s's digest under key B is not enumerated", c)
		}
	}
	// Judged as the control plane judges records (AsRead).
	judge := func(key *ValueKey, c string) Verdict {
		r := shopRequest("colour=" + c + "&qty=1")
		s := ShapeRequestDigest(&r, key)
		return w.Score(AsRead(&s))
	}
	if v := judge(&b, "red"); hasReason(v, ReasonNewValue) {
		t.Errorf("red under key B: %v", v.ReasonList())
	}
	if v := judge(&b, "rex"); !hasReason(v, ReasonNewValue) {
		t.Errorf("rex under key B is not a new value: %v", v.ReasonList())
	}
	for _, key := range []*ValueKey{&a, nil} {
		if v := judge(key, "red"); hasReason(v, ReasonNewValue) {
			t.Errorf("red under another key (%v) is a new value: %v", key != nil, v.ReasonList())
		}
	}
}

// Which records are held back does not depend on the value key: two meshes
// with different keys hold back the same requests.
func TestHoldBackIgnoresDigests(t *testing.T) {
	held := func(k ValueKey) uint64 {
		cfg := ShapedTrainConfig()
		cfg.ValueKeyID = k.ID()
		tr, err := NewTrainer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3000; i++ {
			r := shopRequest(fmt.Sprint("colour=c", i%50, "&n=", i))
			s := ShapeRequestDigest(&r, &k)
			tr.Observe(&s)
		}
		_, _, _, h := tr.Samples()
		return h
	}
	a, b, none := held(testKey(t, keyA)), held(testKey(t, keyB)), held(ValueKey{})
	if a != b || a != none || a == 0 {
		t.Errorf("held back: %d with key A, %d with key B, %d without", a, b, none)
	}
}
