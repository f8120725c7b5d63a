package models

import (
	"strings"
	"testing"
)

// sameWords answers as Go's comparison for every length up to a few words,
// whichever byte differs (first, last, in the overlap of the last word) and
// whatever the lengths: it is what a learned key is confirmed with in wasm.
func TestSameWordsIsEquality(t *testing.T) {
	for n := 0; n <= 41; n++ {
		a := strings.Repeat("a", n)
		b := []byte(a)
		if !sameWords(a, b) || !same(a, b) {
			t.Fatalf("length %d: equal strings differ", n)
		}
		for i := 0; i < n; i++ {
			c := append([]byte(nil), b...)
			c[i] ^= 0x80
			if sameWords(a, c) || same(a, c) {
				t.Fatalf("length %d: a change at byte %d goes unseen", n, i)
			}
		}
		if n > 0 && (sameWords(a, b[:n-1]) || sameWords(a[:n-1], b)) {
			t.Fatalf("length %d: a prefix compares equal", n)
		}
	}
	// Views into a larger buffer, at odd offsets: loads are unaligned.
	buf := []byte("xxspiffe://cluster.local/ns/shop/sa/frontendyy")
	if !sameWords("spiffe://cluster.local/ns/shop/sa/frontend", buf[2:len(buf)-2]) {
		t.Error("an unaligned view differs from its string")
	}
}
