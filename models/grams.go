package models

// Character trigrams seen in normal requests, in a one-hash Bloom filter
// (after Anagram, Wang et al., RAID 2006): an attack payload is made of
// character sequences normal input never contains ("');", "${j", "/..").
// Letters are folded to lower case, digits to '0' and bytes of non-ASCII
// text to one, so identifiers, numbers and words of every script do not fill
// the filter. The content model counts the trigrams of a request that the
// filter has never seen where they cluster most densely (novelDensest).

// gramBits is log2 of the filter's size in bits: 2^17 bits, 16 KiB.
const (
	gramBits  = 17
	gramWords = 1 << gramBits / 64
)

// gramFold maps a byte to what trigrams see of it.
var gramFold = func() (t [256]byte) {
	for c := 0; c < 256; c++ {
		switch {
		case c >= 'A' && c <= 'Z':
			t[c] = byte(c) + 'a' - 'A'
		case c >= '0' && c <= '9':
			t[c] = '0'
		case c >= 0x80:
			// Non-ASCII text (UTF-8 of any script) as one letter.
			t[c] = 0x80
		default:
			t[c] = byte(c)
		}
	}
	return t
}()

// gramSlot returns the filter bit of a trigram (three folded bytes).
func gramSlot(g uint32) uint32 { return g * 0x9E3779B1 >> (32 - gramBits) }

// gramCounts counts, per filter slot, the trigrams training saw: the
// filter is the slots counted at least once, and the share of trigrams seen
// once estimates how likely a new one is (Good-Turing).
type gramCounts []uint16

func newGramCounts() gramCounts { return make(gramCounts, 1<<gramBits) }

// add counts every trigram of v.
func (c gramCounts) add(v []byte) {
	if len(v) > MaxValueBytes {
		v = v[:MaxValueBytes]
	}
	var g uint32
	for i, b := range v {
		g = (g<<8 | uint32(gramFold[b])) & 0xFFFFFF
		if i >= 2 {
			if s := gramSlot(g); c[s] < 0xFFFF {
				c[s]++
			}
		}
	}
}

// addRequest counts the trigrams of what the content model reads of a
// request: its path, parameter names and values (s holds its parameters).
func (c gramCounts) addRequest(r *Request, s *paramScratch) {
	c.add(view(limitPath(r.Path)))
	for i := 0; i < s.n; i++ {
		p := &s.params[i]
		if !p.header {
			c.add(p.name)
		}
		c.add(p.value)
	}
}

// filter returns the Bloom filter of the slots counted.
func (c gramCounts) filter() []uint64 {
	f := make([]uint64, gramWords)
	for s, n := range c {
		if n > 0 {
			f[s>>6] |= 1 << (uint(s) & 63)
		}
	}
	return f
}

// limitPath returns at most MaxValueBytes of a path.
func limitPath(p string) string {
	if len(p) > MaxValueBytes {
		return p[:MaxValueBytes]
	}
	return p
}
