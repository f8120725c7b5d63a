package source

import (
	"bytes"
	"testing"
)

// FuzzReadPcap feeds arbitrary bytes to ReadPcap: it must not panic, and
// what it emits is bounded by its input.
func FuzzReadPcap(f *testing.F) {
	b := newCap(f, "eth")
	c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
	c.client("POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /x\r\n")
	c.server("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n")
	c.close()
	f.Add(b.pcap())
	f.Add(b.pcapng())
	f.Add(simple(f, "raw4", "10.0.0.1", "10.0.0.2").pcap())
	// pcapng interface block with if_tsresol 0: pcapgo divides by zero
	f.Add([]byte("\n\r\r\nD\x00\x00\x00M<+\x1a\x01\x00\x00\x000000000000 \x00A000000000000000000000000000000000\x00\x000000\x01\x00\x00\x000\x00\x00\x0000000000\t\x00\x00\x00\x00\x00\x00\x0000000000000000000000000000000000"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, probs := 0, 0
		st, _ := ReadPcap(bytes.NewReader(data), "fuzz.pcap", PcapOptions{MaxFlows: 16, MaxFlowBytes: 1 << 16},
			func(r *Record) error {
				n++
				if len(r.Request.Body) > 4096 || r.Request.Method == "" {
					t.Fatalf("bad record %+v", r)
				}
				return nil
			}, func(Problem) { probs++ })
		if n > len(data) || probs > 4*len(data)+1 || st.Requests != n {
			t.Fatalf("%d records, %d problems from %d bytes", n, probs, len(data))
		}
	})
}
