package source

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkReadPcap reads a capture of 10,000 keep-alive requests and
// their responses on one connection; see requests/s.
func BenchmarkReadPcap(b *testing.B) {
	const n = 10000
	cb := newCap(b, "eth")
	c := cb.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
	for i := 0; i < n; i++ {
		c.client(fmt.Sprintf("GET /api/v1/items/%d?page=%d HTTP/1.1\r\nHost: items\r\nUser-Agent: bench/1\r\nAccept: application/json\r\n\r\n", i, i%7))
		c.server("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"items\":[1,2,3]}")
	}
	c.close()
	data := cb.pcap()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got := 0
		_, err := ReadPcap(bytes.NewReader(data), "bench.pcap", PcapOptions{}, func(*Record) error { got++; return nil }, nil)
		if err != nil || got != n {
			b.Fatalf("%d requests, %v", got, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "requests/s")
}
