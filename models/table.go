package models

// table is an open-addressing hash table from 64-bit key hashes to uint32
// values, built once and read-only after. The scoring hot path looks keys up
// in it instead of a Go map: a flat probe over one slice costs a fraction of
// a map lookup, and far less when compiled to WebAssembly. A key and its
// value share a slot, so a lookup reads one cache line, not one in each of
// two arrays: between two requests of a proxy the tables go cold, and a
// request looks up several.
type table struct {
	slots []slot // a zero key marks an empty slot; a real key 0 is stored as 1
	mask  uint64
}

type slot struct {
	key uint64
	val uint32
}

func newTable(n int) table {
	size := 8
	for size < n*2 {
		size <<= 1
	}
	return table{slots: make([]slot, size), mask: uint64(size - 1)}
}

func slotKey(k uint64) uint64 {
	if k == 0 {
		return 1
	}
	return k
}

func (t *table) put(k uint64, v uint32) {
	k = slotKey(k)
	for i := (k * 0x9E3779B97F4A7C15) >> 32 & t.mask; ; i = (i + 1) & t.mask {
		if s := &t.slots[i]; s.key == 0 || s.key == k {
			s.key, s.val = k, v
			return
		}
	}
}

func (t *table) get(k uint64) (uint32, bool) {
	if len(t.slots) == 0 {
		return 0, false
	}
	k = slotKey(k)
	for i := (k * 0x9E3779B97F4A7C15) >> 32 & t.mask; ; i = (i + 1) & t.mask {
		switch s := &t.slots[i]; s.key {
		case k:
			return s.val, true
		case 0:
			return 0, false
		}
	}
}
