package models

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
)

// Value digests: a filter ships a short query or form value as its shape
// and, when its configuration holds a value key, a keyed digest of the
// value (a mark before the shape, see AppendShapeQueryDigest). The control
// plane's trainer enumerates a parameter's digests as the offline trainer
// enumerates its values (ParamModel.HashEnum), so a closed field (an
// enumeration, a flag, a small identifier set) is judged by its values
// through the loop too, without the values leaving the sidecar: without the
// key a digest cannot be tried against a dictionary of likely values. The
// key is the mesh's secret, not a credential: whoever holds it (the filters,
// the control plane that writes their configuration) can test a guess.

// MaxDigestedValue is the longest value (decoded) a record carries a
// digest of: enumerable values are short, and a longer one is judged by
// its shape alone.
const MaxDigestedValue = 24

// MaxDigestMarks bounds the digest marks of a record's query, and of its
// body: the first values of each that are short enough carry one, so a
// request of many short values cannot make its record grow past the
// collector's bounds (MaxShippedBody). A field met past them in training
// is not enumerated by digests.
const MaxDigestMarks = 64

// ValueKey is the key of value digests: 128 bits (SipHash-2-4's key).
type ValueKey struct {
	k0, k1 uint64
	id     uint32 // ID, worked out once
	set    bool
}

// ValueKeyBytes is the length of a value key; written as hex it is twice
// as long.
const ValueKeyBytes = 16

// ParseValueKey reads a value key written as 32 hex digits.
func ParseValueKey(s string) (ValueKey, error) {
	if len(s) != 2*ValueKeyBytes {
		return ValueKey{}, fmt.Errorf("value key: %d characters, want %d hex digits", len(s), 2*ValueKeyBytes)
	}
	var b [ValueKeyBytes]byte
	if _, err := hex.Decode(b[:], []byte(s)); err != nil {
		return ValueKey{}, fmt.Errorf("value key: not hex: %v", err)
	}
	k := ValueKey{k0: binary.LittleEndian.Uint64(b[:8]), k1: binary.LittleEndian.Uint64(b[8:]), set: true}
	if k.k0 == 0 && k.k1 == 0 {
		return ValueKey{}, fmt.Errorf("value key: all zeros; generate one (openssl rand -hex %d)", ValueKeyBytes)
	}
	k.id = uint32(sipHash(k.k0, k.k1, []byte("meshward value key id")))
	if k.id == 0 {
		k.id = 1 // 0 says no key
	}
	return k, nil
}

// Set reports whether the key was given.
func (k *ValueKey) Set() bool { return k != nil && k.set }

// String names the key by its ID, never the key itself: a key printed by
// mistake (a configuration logged with %v) gives nothing away.
func (k ValueKey) String() string {
	if !k.set {
		return "no value key"
	}
	return fmt.Sprintf("value key %08x", k.id)
}

// GoString is String, for %#v.
func (k ValueKey) GoString() string { return k.String() }

// Hex writes the key as ParseValueKey reads it.
func (k ValueKey) Hex() string {
	var b [ValueKeyBytes]byte
	binary.LittleEndian.PutUint64(b[:8], k.k0)
	binary.LittleEndian.PutUint64(b[8:], k.k1)
	return hex.EncodeToString(b[:])
}

// ID names the key without giving it away: a model's workload records the
// ID of the key its digests were made with (Workload.ValueKeyID), and a
// filter with another key does not look its values up among them.
func (k *ValueKey) ID() uint32 {
	if !k.Set() {
		return 0
	}
	return k.id
}

// Digest is the keyed digest of a value.
func (k *ValueKey) Digest(v []byte) uint64 { return sipHash(k.k0, k.k1, v) }

// sipHash is SipHash-2-4 (Aumasson and Bernstein, 2012) of m under the key
// (k0, k1): a keyed function whose outputs, without the key, say nothing
// about its inputs.
func sipHash(k0, k1 uint64, m []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	b := uint64(len(m)) << 56
	for len(m) >= 8 {
		w := binary.LittleEndian.Uint64(m)
		v3 ^= w
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0 ^= w
		m = m[8:]
	}
	for i := len(m) - 1; i >= 0; i-- {
		b |= uint64(m[i]) << (8 * uint(i))
	}
	v3 ^= b
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= b
	v2 ^= 0xff
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	return v0 ^ v1 ^ v2 ^ v3
}

// sipRound is one SipRound.
func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}

// DigestMarkLen is the length of a digest mark: '~', the digest as 16 hex digits, '~', before a value's
// shape. A shape never holds a bare '~' (appendEncodedShapeByte escapes
// it), so a mark is told from a shape.
const DigestMarkLen = 18

// appendDigestMark appends the mark of digest d.
func appendDigestMark(dst []byte, d uint64) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '~')
	for s := 60; s >= 0; s -= 4 {
		dst = append(dst, hexDigits[d>>uint(s)&15])
	}
	return append(dst, '~')
}

// readDigestMark reads a digest mark at the start of v: the digest, and
// whether v starts with one.
func readDigestMark(v []byte) (uint64, bool) {
	if len(v) < DigestMarkLen || v[0] != '~' || v[DigestMarkLen-1] != '~' {
		return 0, false
	}
	var d uint64
	for _, c := range v[1 : DigestMarkLen-1] {
		switch {
		case c >= '0' && c <= '9':
			d = d<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			d = d<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return d, true
}

// DigestMarks counts the digest marks of a record's query or body shape.
func DigestMarks(shape []byte) int {
	n := 0
	for {
		i := bytes.IndexByte(shape, '~')
		if i < 0 {
			return n
		}
		shape = shape[i:]
		if _, ok := readDigestMark(shape); ok {
			n++
			shape = shape[DigestMarkLen:]
			continue
		}
		shape = shape[1:]
	}
}

// Keyword marks. A shape keeps no keyword (a shape's letters are all
// 'a'), so a record says which query and form values had keywords: the
// value's shape (after its digest's mark, if any) follows `~N~`, N the
// keywords counted in the decoded value (countKeywords) up to
// maxMarkedKeywords. A record that marks them says so
// (Request.KeywordMarks); in it a value without a mark had none.
// expandBody marks the values it draws out of a long body's tail with
// kwUnknownMark: what they held was never read.
const (
	// KeywordMarkLen is the length of a keyword mark.
	KeywordMarkLen = 3
	// maxMarkedKeywords is the most keywords a mark counts: as many as a
	// value's keyword surprise counts (ParamModel.valueSurprise).
	maxMarkedKeywords = 3
	// kwUnknownMark is the count of a value whose keywords are not known.
	kwUnknownMark = '?'
)

// What a parameter's kw says (param.kw): a value's keyword count when its
// record marked it, or one of these.
const (
	kwLive    = -1 // a request's value: count its keywords
	kwUnknown = -2 // a record's value whose keywords were not marked
)

// appendKeywordMark appends the mark of a value with k > 0 keywords.
func appendKeywordMark(dst []byte, k int) []byte {
	return append(dst, '~', byte('0'+min(k, maxMarkedKeywords)), '~')
}

// readKeywordMark reads a keyword mark at the start of v: the count it
// says (kwUnknown for kwUnknownMark), and whether v starts with one.
func readKeywordMark(v []byte) (int, bool) {
	if len(v) < KeywordMarkLen || v[0] != '~' || v[2] != '~' {
		return 0, false
	}
	switch c := v[1]; {
	case c >= '1' && c <= '0'+maxMarkedKeywords:
		return int(c - '0'), true
	case c == kwUnknownMark:
		return kwUnknown, true
	}
	return 0, false
}

// appendUnmarked appends s without the keyword and digest marks of its
// values (marks after a '=').
func appendUnmarked(dst, s []byte) []byte {
	for len(s) > 0 {
		i := bytes.IndexByte(s, '=')
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i+1]...)
		s = s[i+1:]
		if _, ok := readKeywordMark(s); ok {
			s = s[KeywordMarkLen:]
		}
		if _, ok := readDigestMark(s); ok {
			s = s[DigestMarkLen:]
		}
	}
	return dst
}
