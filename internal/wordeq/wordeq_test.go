package wordeq

import (
	"strings"
	"testing"
)

// Words answers as Go's comparison for every length up to a few words,
// whichever byte differs (first, last, in the overlap of the last word) and
// whatever the lengths: the filter confirms learned keys with it in wasm.
func TestWordsIsEquality(t *testing.T) {
	for n := 0; n <= 41; n++ {
		a := strings.Repeat("a", n)
		b := string([]byte(a))
		if !Words(a, b) || !Equal(a, b) {
			t.Fatalf("length %d: equal strings differ", n)
		}
		for i := 0; i < n; i++ {
			c := []byte(a)
			c[i] ^= 0x80
			if Words(a, string(c)) || Equal(a, string(c)) {
				t.Fatalf("length %d: a change at byte %d goes unseen", n, i)
			}
		}
		if n > 0 && (Words(a, b[:n-1]) || Words(a[:n-1], b)) {
			t.Fatalf("length %d: a prefix compares equal", n)
		}
	}
	// Views into a larger string, at odd offsets: loads are unaligned.
	buf := "xxspiffe://cluster.local/ns/shop/sa/frontendyy"
	if !Words("spiffe://cluster.local/ns/shop/sa/frontend", buf[2:len(buf)-2]) {
		t.Error("an unaligned view differs from its string")
	}
}
