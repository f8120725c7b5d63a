package source

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source/internal/http1"
)

// capBuilder builds a capture in memory, one TCP segment at a time.
type capBuilder struct {
	t    testing.TB
	link string // eth, raw4, vlan, qinq, sll, sll2, null
	ts   time.Time
	pkts [][]byte
	cis  []gopacket.CaptureInfo
}

var fxStart = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newCap(t testing.TB, link string) *capBuilder {
	return &capBuilder{t: t, link: link, ts: fxStart}
}

func (b *capBuilder) linkType() layers.LinkType {
	switch b.link {
	case "raw4":
		return linkTypeRawIPv4
	case "sll":
		return layers.LinkTypeLinuxSLL
	case "sll2":
		return linkTypeLinuxSLL & 0xff // see write: the header is patched
	case "null":
		return layers.LinkTypeNull
	}
	return layers.LinkTypeEthernet
}

// ipLayer returns the network layer for src→dst.
func ipLayer(src, dst string, proto layers.IPProtocol) gopacket.NetworkLayer {
	s, d := net.ParseIP(src), net.ParseIP(dst)
	if s.To4() != nil {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: s.To4(), DstIP: d.To4(), Id: 7}
	}
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: s, DstIP: d}
}

// frame wraps network-layer bytes in the capture's link layer.
func (b *capBuilder) frame(ipBytes []byte, v6 bool) []byte {
	et := layers.EthernetTypeIPv4
	if v6 {
		et = layers.EthernetTypeIPv6
	}
	mac1, mac2 := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	var ls []gopacket.SerializableLayer
	switch b.link {
	case "raw4":
		return ipBytes
	case "sll", "sll2":
		var h []byte
		if b.link == "sll" {
			h = make([]byte, 16)
			binary.BigEndian.PutUint16(h[2:], 1)
			binary.BigEndian.PutUint16(h[4:], 6)
			copy(h[6:], mac1)
			binary.BigEndian.PutUint16(h[14:], uint16(et))
		} else {
			h = make([]byte, 20)
			binary.BigEndian.PutUint16(h[0:], uint16(et))
			binary.BigEndian.PutUint16(h[8:], 1)
			h[11] = 6
			copy(h[12:], mac1)
		}
		return append(h, ipBytes...)
	case "null":
		fam := layers.ProtocolFamilyIPv4
		if v6 {
			fam = layers.ProtocolFamilyIPv6Linux
		}
		ls = []gopacket.SerializableLayer{&layers.Loopback{Family: fam}}
	case "vlan":
		ls = []gopacket.SerializableLayer{
			&layers.Ethernet{SrcMAC: mac1, DstMAC: mac2, EthernetType: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 42, Type: et},
		}
	case "qinq":
		ls = []gopacket.SerializableLayer{
			&layers.Ethernet{SrcMAC: mac1, DstMAC: mac2, EthernetType: layers.EthernetTypeQinQ},
			&layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 42, Type: et},
		}
	default:
		ls = []gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: mac1, DstMAC: mac2, EthernetType: et}}
	}
	ls = append(ls, gopacket.Payload(ipBytes))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		b.t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// tcpBytes serializes an IP packet holding one TCP segment.
func (b *capBuilder) tcpBytes(src, dst string, sport, dport uint16, seq, ack uint32, flags, payload string) ([]byte, bool) {
	ip := ipLayer(src, dst, layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, Ack: ack, Window: 65535,
		SYN: strings.Contains(flags, "S"), ACK: strings.Contains(flags, "A"), FIN: strings.Contains(flags, "F"),
		RST: strings.Contains(flags, "R"), PSH: payload != ""}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		b.t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip.(gopacket.SerializableLayer), tcp, gopacket.Payload(payload)); err != nil {
		b.t.Fatal(err)
	}
	_, v6 := ip.(*layers.IPv6)
	return append([]byte(nil), buf.Bytes()...), v6
}

func (b *capBuilder) add(frame []byte) {
	b.ts = b.ts.Add(time.Millisecond)
	b.pkts = append(b.pkts, frame)
	b.cis = append(b.cis, gopacket.CaptureInfo{Timestamp: b.ts, CaptureLength: len(frame), Length: len(frame)})
}

// seg adds one TCP segment.
func (b *capBuilder) seg(src, dst string, sport, dport uint16, seq, ack uint32, flags, payload string) {
	ipb, v6 := b.tcpBytes(src, dst, sport, dport, seq, ack, flags, payload)
	b.add(b.frame(ipb, v6))
}

// pcap writes the capture as classic pcap.
func (b *capBuilder) pcap() []byte {
	var out bytes.Buffer
	w := pcapgo.NewWriter(&out)
	if err := w.WriteFileHeader(65536, b.linkType()); err != nil {
		b.t.Fatal(err)
	}
	for i, p := range b.pkts {
		if err := w.WritePacket(b.cis[i], p); err != nil {
			b.t.Fatal(err)
		}
	}
	data := out.Bytes()
	if b.link == "sll2" { // pcapgo's link type is a byte
		binary.LittleEndian.PutUint32(data[20:24], linkTypeLinuxSLL)
	}
	return data
}

// pcapng writes the capture as pcapng.
func (b *capBuilder) pcapng() []byte {
	var out bytes.Buffer
	w, err := pcapgo.NewNgWriter(&out, b.linkType())
	if err != nil {
		b.t.Fatal(err)
	}
	for i, p := range b.pkts {
		if err := w.WritePacket(b.cis[i], p); err != nil {
			b.t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.t.Fatal(err)
	}
	return out.Bytes()
}

// conversation is a client and server with their sequence numbers.
type conversation struct {
	b            *capBuilder
	cip, sip     string
	cport, sport uint16
	cseq, sseq   uint32
}

func (b *capBuilder) conv(cip string, cport uint16, sip string, sport uint16) *conversation {
	return &conversation{b: b, cip: cip, sip: sip, cport: cport, sport: sport, cseq: 1000, sseq: 5000}
}

func (c *conversation) open() *conversation {
	c.b.seg(c.cip, c.sip, c.cport, c.sport, c.cseq, 0, "S", "")
	c.b.seg(c.sip, c.cip, c.sport, c.cport, c.sseq, c.cseq+1, "SA", "")
	c.cseq++
	c.sseq++
	c.b.seg(c.cip, c.sip, c.cport, c.sport, c.cseq, c.sseq, "A", "")
	return c
}

// client sends data from the client, in segments of at most n bytes (0: one).
func (c *conversation) client(data string) {
	c.b.seg(c.cip, c.sip, c.cport, c.sport, c.cseq, c.sseq, "A", data)
	c.cseq += uint32(len(data))
}

func (c *conversation) server(data string) {
	c.b.seg(c.sip, c.cip, c.sport, c.cport, c.sseq, c.cseq, "A", data)
	c.sseq += uint32(len(data))
}

func (c *conversation) close() {
	c.b.seg(c.cip, c.sip, c.cport, c.sport, c.cseq, c.sseq, "FA", "")
	c.b.seg(c.sip, c.cip, c.sport, c.cport, c.sseq, c.cseq+1, "FA", "")
	c.b.seg(c.cip, c.sip, c.cport, c.sport, c.cseq+1, c.sseq+1, "A", "")
}

type pcapResult struct {
	recs  []*Record
	probs []Problem
	stats PcapStats
	err   error
}

func readCap(t testing.TB, data []byte, opt PcapOptions) pcapResult {
	t.Helper()
	var res pcapResult
	res.stats, res.err = ReadPcap(bytes.NewReader(data), "fx.pcap", opt, func(r *Record) error {
		res.recs = append(res.recs, r)
		return nil
	}, func(p Problem) { res.probs = append(res.probs, p) })
	return res
}

const (
	fxReq  = "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: api\r\nUser-Agent: T/1\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n"
	fxResp = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
)

// simple builds one request and its response over a full connection.
func simple(t testing.TB, link, cip, sip string) *capBuilder {
	b := newCap(t, link)
	c := b.conv(cip, 40000, sip, 80).open()
	c.client(fxReq)
	c.server(fxResp)
	c.close()
	return b
}

func checkSimple(t *testing.T, res pcapResult, src, dst, pos string) {
	t.Helper()
	if res.err != nil {
		t.Fatal(res.err)
	}
	if len(res.probs) > 0 {
		t.Errorf("problems: %v", res.probs)
	}
	if len(res.recs) != 1 {
		t.Fatalf("%d records, want 1 (stats %+v)", len(res.recs), res.stats)
	}
	r := res.recs[0]
	want := models.Request{
		Method: "GET", Path: "/a/b", Query: "x=1&y=2",
		Headers: []models.Header{{Name: "host", Value: "api"}, {Name: "user-agent", Value: "T/1"},
			{Name: "x-multi", Value: "a"}, {Name: "x-multi", Value: "b"}},
		Source: src, Destination: dst, Status: 200, ResponseBytes: 5, Duration: time.Millisecond,
	}
	if !reflect.DeepEqual(r.Request, want) {
		t.Errorf("request\n got %+v\nwant %+v", r.Request, want)
	}
	if r.Pos != pos {
		t.Errorf("Pos %q, want %q", r.Pos, pos)
	}
	if wantTS := fxStart.Add(4 * time.Millisecond); !r.TS.Equal(wantTS) {
		t.Errorf("TS %v, want %v", r.TS, wantTS)
	}
	st := res.stats
	if st.TCPFlows != 1 || st.HTTPFlows != 1 || st.NonHTTPFlows != 0 || st.Requests != 1 || st.Responses != 1 || st.DecodeErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestReadPcapLinkTypes(t *testing.T) {
	const pos4 = "fx.pcap:flow 10.0.0.1:40000→10.0.0.2:80#1"
	for _, link := range []string{"eth", "raw4", "vlan", "qinq", "sll", "sll2", "null"} {
		t.Run(link, func(t *testing.T) {
			b := simple(t, link, "10.0.0.1", "10.0.0.2")
			checkSimple(t, readCap(t, b.pcap(), PcapOptions{}), "10.0.0.1", "10.0.0.2", pos4)
			if link != "sll2" {
				checkSimple(t, readCap(t, b.pcapng(), PcapOptions{}), "10.0.0.1", "10.0.0.2", pos4)
			}
		})
	}
	t.Run("ipv6", func(t *testing.T) {
		b := simple(t, "eth", "2001:db8::1", "2001:db8::2")
		checkSimple(t, readCap(t, b.pcap(), PcapOptions{}), "2001:db8::1", "2001:db8::2",
			"fx.pcap:flow [2001:db8::1]:40000→[2001:db8::2]:80#1")
	})
	t.Run("identities and overrides", func(t *testing.T) {
		b := simple(t, "eth", "10.0.0.1", "10.0.0.2")
		ids := map[string]string{"10.0.0.1": "frontend", "10.0.0.2": "cart"}
		checkSimple(t, readCap(t, b.pcap(), PcapOptions{Identities: ids}), "frontend", "cart", pos4)
		res := readCap(t, b.pcap(), PcapOptions{Identities: ids, Overrides: Overrides{Dst: "payments", Label: "normal"}})
		if r := res.recs[0]; r.Request.Source != "frontend" || r.Request.Destination != "payments" || r.Label != "normal" {
			t.Errorf("overrides: %+v", r)
		}
	})
}

func TestReadPcapReassembly(t *testing.T) {
	t.Run("out of order and retransmitted", func(t *testing.T) {
		b := newCap(t, "eth")
		c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
		s := c.cseq
		seg := func(off int, data string) {
			b.seg(c.cip, c.sip, c.cport, c.sport, s+uint32(off), c.sseq, "A", data)
		}
		// fxReq in three parts: sent 2, 1, then 1 again overlapping 2, then 3
		p1, p2, p3 := fxReq[:10], fxReq[10:30], fxReq[30:]
		seg(10, p2)
		seg(0, p1)
		seg(0, fxReq[:15]) // retransmission overlapping part 2
		seg(30, p3)
		c.cseq += uint32(len(fxReq))
		c.server(fxResp)
		c.close()
		res := readCap(t, b.pcap(), PcapOptions{})
		if len(res.recs) != 1 {
			t.Fatalf("%d records %v", len(res.recs), res.probs)
		}
		r := res.recs[0].Request
		if r.Path != "/a/b" || len(r.Headers) != 4 || r.Status != 200 {
			t.Errorf("got %+v", r)
		}
		// TS is when the first byte arrived (the second packet after the handshake)
		if want := fxStart.Add(5 * time.Millisecond); !res.recs[0].TS.Equal(want) {
			t.Errorf("TS %v, want %v", res.recs[0].TS, want)
		}
		if res.stats.Skipped["retransmitted bytes"] != 15 {
			t.Errorf("skipped %v", res.stats.Skipped)
		}
	})
	t.Run("missing SYN and FIN", func(t *testing.T) {
		b := newCap(t, "eth")
		c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80)
		c.client(fxReq)
		c.server(fxResp)
		res := readCap(t, b.pcap(), PcapOptions{})
		if len(res.recs) != 1 || res.recs[0].Request.Status != 200 || res.recs[0].Request.Source != "10.0.0.1" {
			t.Fatalf("records %+v problems %v", res.recs, res.probs)
		}
	})
	t.Run("missing SYN, server speaks first in the capture", func(t *testing.T) {
		b := newCap(t, "eth")
		c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80)
		// only the response and then a second request are seen
		c.server(fxResp)
		c.client(fxReq)
		res := readCap(t, b.pcap(), PcapOptions{})
		if len(res.recs) != 1 || res.recs[0].Request.Source != "10.0.0.1" {
			t.Fatalf("records %+v problems %v", res.recs, res.probs)
		}
	})
	t.Run("IPv4 fragments", func(t *testing.T) {
		b := newCap(t, "eth")
		c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
		ipb, _ := b.tcpBytes(c.cip, c.sip, c.cport, c.sport, c.cseq, c.sseq, "A", fxReq)
		c.cseq += uint32(len(fxReq))
		tcpb := ipb[20:]
		// fragments out of order: 2nd, 3rd, 1st
		cuts := [][2]int{{24, 48}, {48, len(tcpb)}, {0, 24}}
		for _, cut := range cuts {
			ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, Id: 99,
				SrcIP: net.ParseIP(c.cip).To4(), DstIP: net.ParseIP(c.sip).To4(), FragOffset: uint16(cut[0] / 8)}
			if cut[1] < len(tcpb) {
				ip.Flags = layers.IPv4MoreFragments
			}
			buf := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
				ip, gopacket.Payload(tcpb[cut[0]:cut[1]])); err != nil {
				t.Fatal(err)
			}
			b.add(b.frame(append([]byte(nil), buf.Bytes()...), false))
		}
		c.server(fxResp)
		c.close()
		res := readCap(t, b.pcap(), PcapOptions{})
		if len(res.recs) != 1 || res.recs[0].Request.Path != "/a/b" || res.recs[0].Request.Status != 200 {
			t.Fatalf("records %+v problems %v stats %+v", res.recs, res.probs, res.stats)
		}
		if res.stats.Fragments != 3 || res.stats.Reassembled != 1 {
			t.Errorf("stats %+v", res.stats)
		}
	})
	t.Run("IPv6 fragments", func(t *testing.T) {
		b := newCap(t, "eth")
		c := b.conv("2001:db8::1", 40000, "2001:db8::2", 80).open()
		ipb, _ := b.tcpBytes(c.cip, c.sip, c.cport, c.sport, c.cseq, c.sseq, "A", fxReq)
		c.cseq += uint32(len(fxReq))
		tcpb := ipb[40:]
		for _, cut := range [][2]int{{32, len(tcpb)}, {0, 32}} {
			fh := make([]byte, 8)
			fh[0] = byte(layers.IPProtocolTCP)
			fo := uint16(cut[0]/8) << 3
			if cut[1] < len(tcpb) {
				fo |= 1
			}
			binary.BigEndian.PutUint16(fh[2:], fo)
			binary.BigEndian.PutUint32(fh[4:], 77)
			ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6Fragment,
				SrcIP: net.ParseIP(c.cip), DstIP: net.ParseIP(c.sip)}
			buf := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
				ip, gopacket.Payload(append(fh, tcpb[cut[0]:cut[1]]...))); err != nil {
				t.Fatal(err)
			}
			b.add(b.frame(append([]byte(nil), buf.Bytes()...), true))
		}
		c.server(fxResp)
		c.close()
		res := readCap(t, b.pcap(), PcapOptions{})
		if len(res.recs) != 1 || res.recs[0].Request.Path != "/a/b" || res.recs[0].Request.Status != 200 {
			t.Fatalf("records %+v problems %v stats %+v", res.recs, res.probs, res.stats)
		}
	})
}

func TestReadPcapHTTP(t *testing.T) {
	t.Run("pipelined", func(t *testing.T) {
		b := newCap(t, "eth")
		c := b.conv("10.0.0.1", 40000, "10.0.0.2", 8080).open()
		c.client("POST /p HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\n\r\nabc" +
			"HEAD /h HTTP/1.1\r\nHost: s\r\n\r\n" +
			"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\n")
		c.server("HTTP/1.1 100 Continue\r\n\r\n")
		c.server("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok" +
			"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + // HEAD: no body
			"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n0\r\n\r\n")
		c.close()
		res := readCap(t, b.pcap(), PcapOptions{})
		if len(res.probs) > 0 {
			t.Errorf("problems %v", res.probs)
		}
		type got struct {
			method, path, body  string
			reqBytes, respBytes int64
			status              int
			dur                 time.Duration
		}
		var gs []got
		for _, r := range res.recs {
			q := r.Request
			gs = append(gs, got{q.Method, q.Path, string(q.Body), q.RequestBytes, q.ResponseBytes, q.Status, q.Duration})
		}
		want := []got{
			{"POST", "/p", "abc", 3, 2, 201, 2 * time.Millisecond},
			{"HEAD", "/h", "", 0, 0, 200, 2 * time.Millisecond},
			{"PUT", "/c", "wikipedia", 9, 3, 404, 2 * time.Millisecond},
		}
		if !reflect.DeepEqual(gs, want) {
			t.Errorf("got  %+v\nwant %+v", gs, want)
		}
		if res.recs[2].Pos != "fx.pcap:flow 10.0.0.1:40000→10.0.0.2:8080#3" {
			t.Errorf("Pos %q", res.recs[2].Pos)
		}
		if res.stats.Responses != 3 {
			t.Errorf("stats %+v", res.stats)
		}
	})
	t.Run("malformed then good", func(t *testing.T) {
		b := newCap(t, "eth")
		c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
		bad := "G\x01T /x HTTP/1.1\r\nHost: a\r\n\r\n"
		c.client(bad + "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
		c.server("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		c.close()
		res := readCap(t, b.pcap(), PcapOptions{})
		if len(res.recs) != 1 || res.recs[0].Request.Path != "/ok" {
			t.Fatalf("records %+v", res.recs)
		}
		if len(res.probs) != 1 || res.probs[0].Pos != "fx.pcap:flow 10.0.0.1:40000→10.0.0.2:80 client@0" {
			t.Errorf("problems %v", res.probs)
		}
	})
	t.Run("HTTP/0.9 and no URI", func(t *testing.T) {
		b := newCap(t, "eth")
		c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
		c.client("GET /old\r\n")
		c.server("<html>old</html>")
		c.close()
		c2 := b.conv("10.0.0.1", 40001, "10.0.0.2", 80).open()
		c2.client("GET HTTP/1.1\r\n\r\n")
		c2.server("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		c2.close()
		res := readCap(t, b.pcap(), PcapOptions{})
		if len(res.recs) != 1 || res.recs[0].Request.Path != "/old" || res.recs[0].Request.ResponseBytes != 16 {
			t.Fatalf("records %+v", res.recs)
		}
		if len(res.probs) != 1 || !errors.Is(res.probs[0].Err, http1.ErrNoURI) {
			t.Errorf("problems %v", res.probs)
		}
	})
	t.Run("non-HTTP flow", func(t *testing.T) {
		b := newCap(t, "eth")
		c := b.conv("10.0.0.1", 40000, "10.0.0.2", 22).open()
		c.server("SSH-2.0-OpenSSH_9\r\n")
		c.client("SSH-2.0-OpenSSH_9\r\n")
		c.close()
		res := readCap(t, b.pcap(), PcapOptions{})
		if len(res.recs) != 0 || len(res.probs) != 0 || res.stats.NonHTTPFlows != 1 || res.stats.TCPFlows != 1 {
			t.Errorf("records %v problems %v stats %+v", res.recs, res.probs, res.stats)
		}
	})
	t.Run("upgrade stops parsing", func(t *testing.T) {
		b := newCap(t, "eth")
		c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
		c.client("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello")
		c.server("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi")
		c.close()
		res := readCap(t, b.pcap(), PcapOptions{})
		if len(res.recs) != 1 || res.recs[0].Request.Status != 101 || len(res.probs) != 0 {
			t.Errorf("records %+v problems %v", res.recs, res.probs)
		}
	})
	t.Run("body kept as far as the filter reads", func(t *testing.T) {
		// A payload after 8 KiB of padding is kept (the filter reads it);
		// past models.DefaultBodyLimit, the length is counted.
		for _, n := range []int{8 << 10, models.DefaultBodyLimit + 100} {
			b := newCap(t, "eth")
			c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
			body := strings.Repeat("q=shoes&", n/8) + "q=1'+OR+'1'='1"
			c.client(fmt.Sprintf("POST /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n", len(body)) + body[:1000])
			for off := 1000; off < len(body); off += 1400 {
				c.client(body[off:min(off+1400, len(body))])
			}
			c.close()
			res := readCap(t, b.pcap(), PcapOptions{})
			if len(res.recs) != 1 || res.recs[0].Request.RequestBytes != int64(len(body)) {
				t.Fatalf("%d-byte body: records %+v", len(body), res.recs)
			}
			kept := res.recs[0].Request.Body
			if want := body[:min(len(body), models.DefaultBodyLimit)]; string(kept) != want {
				t.Errorf("%d-byte body: kept %d bytes, want its first %d", len(body), len(kept), len(want))
			}
		}
	})
}

func TestReadPcapOrderAndLimits(t *testing.T) {
	b := newCap(t, "eth")
	// two interleaved connections: the later-closing one has the earlier request
	c1 := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
	c2 := b.conv("10.0.0.3", 40000, "10.0.0.2", 80).open()
	c1.client("GET /first HTTP/1.1\r\n\r\n")
	c2.client("GET /second HTTP/1.1\r\n\r\n")
	c2.close()
	c1.close()
	res := readCap(t, b.pcap(), PcapOptions{})
	if len(res.recs) != 2 || res.recs[0].Request.Path != "/first" || res.recs[1].Request.Path != "/second" {
		t.Fatalf("records %+v", res.recs)
	}
	// a per-flow cap of 30 bytes keeps only the first segment
	b = newCap(t, "eth")
	c := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
	c.client("GET /a HTTP/1.1\r\n\r\n")
	c.client("GET /b HTTP/1.1\r\n\r\n")
	c.close()
	res = readCap(t, b.pcap(), PcapOptions{MaxFlowBytes: 30})
	if len(res.recs) != 1 || res.stats.Skipped["payload bytes over the per-flow cap"] != 19 {
		t.Errorf("records %+v stats %+v", res.recs, res.stats)
	}
	// one flow at a time: the first is flushed early, nothing is lost
	res = readCap(t, func() []byte {
		b := newCap(t, "eth")
		c1 := b.conv("10.0.0.1", 40000, "10.0.0.2", 80).open()
		c1.client("GET /a HTTP/1.1\r\n\r\n")
		c2 := b.conv("10.0.0.3", 40000, "10.0.0.2", 80).open()
		c2.client("GET /b HTTP/1.1\r\n\r\n")
		return b.pcap()
	}(), PcapOptions{MaxFlows: 1})
	if len(res.recs) != 2 || res.stats.Skipped["connections flushed early (flow limit)"] != 1 {
		t.Errorf("records %+v stats %+v", res.recs, res.stats)
	}
}

// A connection open from the start holds back every later request, for
// time order: past MaxPendingBytes the oldest come out early, reported
// once and counted, and none is lost.
func TestReadPcapPendingIsBounded(t *testing.T) {
	b := newCap(t, "eth")
	long := b.conv("10.0.0.9", 40000, "10.0.0.2", 80).open()
	long.client("GET /first HTTP/1.1\r\n\r\n")
	body := strings.Repeat("x", 2000)
	for i := 0; i < 200; i++ {
		c := b.conv("10.0.1.1", uint16(41000+i), "10.0.0.2", 80).open()
		c.client(fmt.Sprintf("POST /p HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
		c.close()
	}
	long.close()
	data := b.pcap()
	var early atomic.Int64
	res := readCap(t, data, PcapOptions{MaxPendingBytes: 64 << 10, Early: &early})
	if len(res.recs) != 201 || res.stats.Early == 0 || early.Load() != int64(res.stats.Early) || len(res.probs) != 1 ||
		!strings.Contains(res.probs[0].Err.Error(), "held back for time order passed 65536 bytes") {
		t.Fatalf("%d records, %d early (metric %d), problems %v", len(res.recs), res.stats.Early, early.Load(), res.probs)
	}
	if res.recs[0].Request.Path == "/first" {
		t.Error("the cap held every request back: /first came first")
	}
	res = readCap(t, data, PcapOptions{})
	if len(res.recs) != 201 || res.stats.Early != 0 || len(res.probs) != 0 || res.recs[0].Request.Path != "/first" {
		t.Errorf("under the default cap: %d records, %d early, problems %v, first %s", len(res.recs), res.stats.Early, res.probs, res.recs[0].Request.Path)
	}
}

// The payload buffered across open connections is bounded: past
// MaxBufferedBytes the least recently active connections are flushed
// early, and their requests are still read.
func TestReadPcapBufferedIsBounded(t *testing.T) {
	b := newCap(t, "eth")
	body := strings.Repeat("x", 100<<10)
	for i := 0; i < 10; i++ {
		c := b.conv("10.0.1.1", uint16(41000+i), "10.0.0.2", 80).open()
		c.client(fmt.Sprintf("POST /p%d HTTP/1.1\r\nContent-Length: %d\r\n\r\n", i, len(body)))
		for off := 0; off < len(body); off += 1400 {
			c.client(body[off:min(off+1400, len(body))])
		}
		// Left open: only the end of the capture, or the bound, flushes it.
	}
	data := b.pcap()
	for _, c := range []struct {
		max     int
		flushed bool
	}{{300 << 10, true}, {0, false}} {
		res := readCap(t, data, PcapOptions{MaxBufferedBytes: c.max})
		flushed := res.stats.Skipped["connections flushed early (buffered bytes limit)"]
		if len(res.recs) != 10 || (flushed > 0) != c.flushed || len(res.probs) != flushed/max(1, flushed) {
			t.Errorf("MaxBufferedBytes %d: %d records, %d connections flushed early, problems %v", c.max, len(res.recs), flushed, res.probs)
		}
		for _, r := range res.recs {
			if r.Request.RequestBytes != int64(len(body)) {
				t.Errorf("MaxBufferedBytes %d: %s read with %d bytes of body", c.max, r.Request.Path, r.Request.RequestBytes)
			}
		}
	}
}

func TestReadPcapErrors(t *testing.T) {
	if _, err := ReadPcap(strings.NewReader("not a capture at all"), "x.txt", PcapOptions{}, func(*Record) error { return nil }, nil); err == nil {
		t.Error("no error for a non-capture")
	}
	data := simple(t, "eth", "10.0.0.1", "10.0.0.2").pcap()
	// truncated in the last packet: the request is still read
	res := readCap(t, data[:len(data)-10], PcapOptions{})
	if res.err != nil || len(res.recs) != 1 || len(res.probs) != 1 || !strings.HasPrefix(res.probs[0].Pos, "fx.pcap:packet ") {
		t.Errorf("truncated: %+v", res)
	}
	stop := errors.New("stop")
	if _, err := ReadPcap(bytes.NewReader(data), "fx.pcap", PcapOptions{}, func(*Record) error { return stop }, nil); err != stop {
		t.Errorf("emit error: %v", err)
	}
	// a garbage packet is a decode error, reported by packet number
	b := newCap(t, "raw4")
	b.add([]byte{0x45, 0, 0})
	res = readCap(t, b.pcap(), PcapOptions{})
	if res.stats.DecodeErrors != 1 || len(res.probs) != 1 || res.probs[0].Pos != "fx.pcap:packet 1" {
		t.Errorf("decode error: %+v", res)
	}
}

func TestLoadIdentities(t *testing.T) {
	in := "# workloads\n10.0.0.1 frontend\n10.0.0.2,cart  # trailing comment\n\n2001:DB8::1 payments\n"
	got, err := LoadIdentities(strings.NewReader(in), "ids.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"10.0.0.1": "frontend", "10.0.0.2": "cart", "2001:db8::1": "payments"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
	for _, bad := range []string{"10.0.0.1\n", "nope frontend\n", "10.0.0.1 a b\n", "10.0.0.1 a\n10.0.0.1 b\n"} {
		_, err := LoadIdentities(strings.NewReader("# x\n"+bad), "ids.txt")
		if err == nil || !strings.HasPrefix(err.Error(), "ids.txt:") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
