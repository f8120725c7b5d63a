package models

import (
	"math/rand"
	"testing"
)

// countKeywordsRef is the plain scan countKeywords must agree with: every
// keyword that starts at every position.
func countKeywordsRef(v []byte) int {
	n := 0
	for i := 0; i < len(v); i++ {
		for _, k := range keywordIndex[lower(v[i])] {
			if hasPrefixFold(v[i:], keywords[k]) {
				n++
			}
		}
	}
	return n
}

// The pair-filtered count equals the plain scan on random values seeded
// with keywords, and on every keyword alone, inside text, and doubled.
func TestCountKeywordsMatchesNaiveScan(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	alpha := []byte("abcdefghijklmnopqrstuvwxyzSELECTUNION ;|`'=-/*<>?!@$(){}.\\%0123456789x_&#")
	for i := 0; i < 20000; i++ {
		n := r.Intn(40)
		b := make([]byte, n)
		for j := range b {
			if r.Intn(10) == 0 {
				b[j] = byte(r.Intn(256))
			} else {
				b[j] = alpha[r.Intn(len(alpha))]
			}
		}
		if r.Intn(3) == 0 && n > 0 {
			k := keywords[r.Intn(len(keywords))]
			p := r.Intn(n)
			b = append(b[:p], append([]byte(k), b[p:]...)...)
		}
		if a, c := countKeywords(b), countKeywordsRef(b); a != c {
			t.Fatalf("%q: %d vs %d", b, a, c)
		}
	}
	for _, k := range keywords {
		for _, v := range []string{k, "x" + k + "y", k + k} {
			if a, c := countKeywords([]byte(v)), countKeywordsRef([]byte(v)); a != c {
				t.Fatalf("%q: %d vs %d", v, a, c)
			}
		}
	}
}
