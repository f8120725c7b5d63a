package source

import "sync/atomic"

// Limits bound what one entry of a traffic file may make a reader hold in
// memory: files come from anywhere, and a few compressed bytes can unpack
// to gigabytes. The zero value takes each reader's default.
type Limits struct {
	// MaxEntryBytes bounds one entry: a JSONL line, a HAR entry, a Jaeger
	// JSON trace. A longer entry is reported as a Problem and skipped
	// without being held; the rest of the file is read.
	MaxEntryBytes int
	// MaxCaptureBytes bounds a capture's TCP payload held while its
	// connections are open (PcapOptions.MaxBufferedBytes); MaxPendingBytes
	// the requests held back for time order (PcapOptions.MaxPendingBytes).
	MaxCaptureBytes, MaxPendingBytes int
	// Hits, when set, counts the entries skipped for a limit, and a
	// capture's requests emitted early (the caller's metric).
	Hits *atomic.Int64
}

// DefaultMaxEntryBytes is MaxEntryBytes for HAR entries and Jaeger traces
// when none is given.
const DefaultMaxEntryBytes = 8 << 20

func (l Limits) entryBytes(def int) int {
	if l.MaxEntryBytes > 0 {
		return l.MaxEntryBytes
	}
	return def
}

func (l Limits) hit() {
	if l.Hits != nil {
		l.Hits.Add(1)
	}
}
