package source

import (
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// PcapWriter writes records as a capture: each request and its response on
// a kept-alive TCP connection per (source, destination) pair, as mesh
// clients pool them, between addresses that stand for the workloads. A
// capture written here reads back through ReadPcap with the same requests.
// Addresses returns the identities file that maps the addresses back to
// workloads. Close ends every connection; call it before closing the file.
type PcapWriter struct {
	w     *pcapgo.Writer
	addrs map[string]net.IP
	next  uint32
	port  uint16
	conns map[[2]string]*conn
	order [][2]string
	last  time.Time
}

// NewPcapWriter starts a capture (Ethernet link type, microsecond times).
func NewPcapWriter(w io.Writer) (*PcapWriter, error) {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return nil, err
	}
	return &PcapWriter{w: pw, addrs: map[string]net.IP{}, next: 1, port: 40000, conns: map[[2]string]*conn{}}, nil
}

// addr returns the stable IPv4 address (10.x.y.z) standing for a workload.
func (p *PcapWriter) addr(name string) net.IP {
	if ip, ok := p.addrs[name]; ok {
		return ip
	}
	n := p.next
	p.next++
	ip := net.IPv4(10, byte(n>>16), byte(n>>8), byte(n)).To4()
	p.addrs[name] = ip
	return ip
}

// Addresses returns the address → workload map of everything written, in
// the identities file format ("ADDRESS NAME" lines).
func (p *PcapWriter) Addresses() string {
	var lines []string
	for name, ip := range p.addrs {
		lines = append(lines, ip.String()+" "+name)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// Write writes one record's connection. Records without a time are stamped
// from the previous one.
func (p *PcapWriter) Write(r *Record) error {
	q := &r.Request
	ts := r.TS
	if ts.IsZero() {
		ts = p.last
	}
	key := [2]string{q.Source, q.Destination}
	c := p.conns[key]
	if c == nil {
		p.port++
		if p.port < 40000 {
			p.port = 40000
		}
		c = &conn{p: p, src: p.addr(q.Source), dst: p.addr(q.Destination), sport: p.port, dport: 8080, cseq: 1000, sseq: 5000}
		p.conns[key] = c
		p.order = append(p.order, key)
		// The handshake just before the first request, so the request's
		// first byte carries the record's time.
		for i, f := range []struct {
			client bool
			fl     flags
		}{{true, flags{syn: true}}, {false, flags{syn: true, ack: true}}, {true, flags{ack: true}}} {
			if err := c.segment(ts.Add(time.Duration(i-3)*10*time.Microsecond), f.client, f.fl, nil); err != nil {
				return err
			}
		}
	}
	var req strings.Builder
	target := q.Path
	if q.Query != "" {
		target += "?" + q.Query
	}
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nhost: %s\r\n", q.Method, target, q.Destination)
	for _, h := range q.Headers {
		if h.Name == "host" || h.Name == "content-length" {
			continue
		}
		fmt.Fprintf(&req, "%s: %s\r\n", h.Name, h.Value)
	}
	if len(q.Body) > 0 {
		fmt.Fprintf(&req, "content-length: %d\r\n", len(q.Body))
	}
	req.WriteString("\r\n")
	req.Write(q.Body)
	status := q.Status
	if status == 0 {
		status = 200
	}
	// The response body is filler of the recorded size, capped at
	// MaxPcapResponse so a 50 MB answer does not make a 50 MB capture.
	filler := min(q.ResponseBytes, MaxPcapResponse)
	resp := "HTTP/1.1 " + strconv.Itoa(status) + " " + statusText(status) + "\r\ncontent-length: " + strconv.FormatInt(filler, 10) +
		"\r\n\r\n" + strings.Repeat("x", int(filler))

	dur := q.Duration
	if dur <= 0 {
		dur = time.Millisecond
	}
	if err := c.data(ts, true, []byte(req.String())); err != nil {
		return err
	}
	if err := c.data(ts.Add(dur), false, []byte(resp)); err != nil {
		return err
	}
	if ts.Add(dur).After(p.last) {
		p.last = ts.Add(dur)
	}
	return nil
}

// Close ends every connection (FIN from both sides) after the last packet.
func (p *PcapWriter) Close() error {
	t := p.last.Add(time.Millisecond)
	for _, key := range p.order {
		c := p.conns[key]
		if err := c.segment(t, true, flags{fin: true, ack: true}, nil); err != nil {
			return err
		}
		if err := c.segment(t.Add(10*time.Microsecond), false, flags{fin: true, ack: true}, nil); err != nil {
			return err
		}
	}
	p.conns, p.order = map[[2]string]*conn{}, nil
	return nil
}

// MaxPcapResponse caps the response bodies a PcapWriter writes.
const MaxPcapResponse = 64 << 10

type flags struct{ syn, ack, fin, psh bool }

type conn struct {
	p            *PcapWriter
	src, dst     net.IP
	sport, dport uint16
	cseq, sseq   uint32
}

// maxSegment keeps every packet inside an Ethernet frame.
const maxSegment = 1400

func (c *conn) data(t time.Time, fromClient bool, payload []byte) error {
	for len(payload) > 0 {
		n := min(len(payload), maxSegment)
		if err := c.segment(t, fromClient, flags{ack: true, psh: true}, payload[:n]); err != nil {
			return err
		}
		payload = payload[n:]
	}
	return nil
}

func (c *conn) segment(t time.Time, fromClient bool, f flags, payload []byte) error {
	srcIP, dstIP, sp, dp := c.src, c.dst, c.sport, c.dport
	seq, ack := &c.cseq, c.sseq
	if !fromClient {
		srcIP, dstIP, sp, dp = c.dst, c.src, c.dport, c.sport
		seq, ack = &c.sseq, c.cseq
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: srcIP, DstIP: dstIP}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sp), DstPort: layers.TCPPort(dp), Seq: *seq, SYN: f.syn, ACK: f.ack, FIN: f.fin, PSH: f.psh, Window: 65535}
	if f.ack {
		tcp.Ack = ack
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return err
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		return err
	}
	*seq += uint32(len(payload))
	if f.syn || f.fin {
		*seq++
	}
	data := buf.Bytes()
	return c.p.w.WritePacket(gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(data), Length: len(data)}, data)
}

func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 500:
		return "Internal Server Error"
	case 503:
		return "Service Unavailable"
	}
	return "Status"
}
