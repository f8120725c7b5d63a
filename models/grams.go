package models

import "math"

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
// once estimates how likely a new one is (Good-Turing). It also remembers
// which parameter's values a slot's trigrams came from (owner: a paramStats
// id, noOwner, or sharedOwner once two parameters' values had it), so that
// each parameter learns how often its own values brought a trigram no other
// value had: how open it is.
type gramCounts struct {
	n     []uint16
	owner []int32
}

const (
	noOwner     = -1
	sharedOwner = -2
)

func newGramCounts() *gramCounts {
	c := &gramCounts{n: make([]uint16, 1<<gramBits), owner: make([]int32, 1<<gramBits)}
	for i := range c.owner {
		c.owner[i] = noOwner
	}
	return c
}

// add counts every trigram of v, a value of the parameter owner (or
// noOwner).
func (c *gramCounts) add(v []byte, owner int32) {
	if len(v) > MaxValueBytes {
		v = v[:MaxValueBytes]
	}
	var g uint32
	for i, b := range v {
		g = (g<<8 | uint32(gramFold[b])) & 0xFFFFFF
		if i >= 2 {
			s := gramSlot(g)
			if c.n[s] < 0xFFFF {
				c.n[s]++
			}
			switch o := c.owner[s]; {
			case o == noOwner && c.n[s] == 1:
				c.owner[s] = owner
			case o != owner:
				c.owner[s] = sharedOwner
			}
		}
	}
}

// addBatch counts the trigrams of what the content model reads of a batch
// of a request's parameters: names and values (owners holds the statistics
// id of each, or noOwner). The path is counted with add.
func (c *gramCounts) addBatch(s *paramScratch, owners *[maxParams]int32) {
	for i := 0; i < s.n; i++ {
		p := &s.params[i]
		if !p.header {
			c.add(p.name, noOwner)
		}
		c.add(p.value, owners[i])
	}
}

// filter returns the Bloom filter of the slots counted.
func (c *gramCounts) filter() []uint64 {
	f := make([]uint64, gramWords)
	for s, n := range c.n {
		if n > 0 {
			f[s>>6] |= 1 << (uint(s) & 63)
		}
	}
	return f
}

// novelCost is the price of one new trigram anywhere: -ln of the
// Good-Turing chance of meeting one (the share of trigrams seen once).
func (c *gramCounts) novelCost() float64 {
	var once, total float64
	for _, n := range c.n {
		total += float64(n)
		if n == 1 {
			once++
		}
	}
	return -math.Log((once + 1) / (total + 2))
}

// credit gives each parameter the trigrams only its values had (stats is
// indexed by owner id).
func (c *gramCounts) credit(stats []*paramStats) {
	for s, n := range c.n {
		if o := c.owner[s]; n == 1 && o >= 0 {
			for _, ps := range [...]*paramStats{stats[o], stats[o].any, stats[o].twin, twinAny(stats[o])} {
				if ps != nil {
					ps.gramSingletons++
				}
			}
		}
	}
}

// creditWorkload credits, as credit does, the parameters of one section
// (ws) finished before training ends, and marks their trigrams shared so
// that credit does not count them again.
func (c *gramCounts) creditWorkload(stats []*paramStats, ws *workloadStats) {
	for s, n := range c.n {
		if o := c.owner[s]; n == 1 && o >= 0 && stats[o] != nil && stats[o].ws == ws {
			for _, ps := range [...]*paramStats{stats[o], stats[o].any, stats[o].twin, twinAny(stats[o])} {
				if ps != nil {
					ps.gramSingletons++
				}
			}
			c.owner[s] = sharedOwner
		}
	}
}

// limitPath returns at most MaxValueBytes of a path.
func limitPath(p string) string {
	if len(p) > MaxValueBytes {
		return p[:MaxValueBytes]
	}
	return p
}

func twinAny(ps *paramStats) *paramStats {
	if ps.twin == nil {
		return nil
	}
	return ps.twin.any
}
