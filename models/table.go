package models

// table is an open-addressing hash table from 64-bit key hashes to uint32
// values, built once and read-only after. The scoring hot path looks keys up
// in it instead of a Go map: a flat probe over two slices costs a fraction of
// a map lookup, and far less when compiled to WebAssembly.
type table struct {
	keys []uint64 // 0 marks an empty slot; a real key 0 is stored as 1
	vals []uint32
	mask uint64
}

func newTable(n int) table {
	size := 8
	for size < n*2 {
		size <<= 1
	}
	return table{keys: make([]uint64, size), vals: make([]uint32, size), mask: uint64(size - 1)}
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
		if t.keys[i] == 0 || t.keys[i] == k {
			t.keys[i], t.vals[i] = k, v
			return
		}
	}
}

func (t *table) get(k uint64) (uint32, bool) {
	if len(t.keys) == 0 {
		return 0, false
	}
	k = slotKey(k)
	for i := (k * 0x9E3779B97F4A7C15) >> 32 & t.mask; ; i = (i + 1) & t.mask {
		switch t.keys[i] {
		case k:
			return t.vals[i], true
		case 0:
			return 0, false
		}
	}
}
