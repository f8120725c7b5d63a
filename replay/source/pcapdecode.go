package source

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Link types gopacket v1.1.19 does not decode by itself.
const (
	linkTypeRawIPv4  = 228
	linkTypeRawIPv6  = 229
	linkTypeLinuxSLL = 276 // SLL2
	linkTypeRawAlt1  = 12  // DLT_RAW on most BSDs
	linkTypeRawAlt2  = 14  // DLT_RAW on OpenBSD
)

var decodeOpts = gopacket.DecodeOptions{NoCopy: true}

// packet decodes one captured packet down to TCP and hands it to the
// connection tracker.
//
// lt is the capture's link type as written (gopacket's LinkType is a byte,
// too small for SLL2's 276).
func (p *pcapReader) packet(data []byte, ci gopacket.CaptureInfo, lt uint32) error {
	ts := ci.Timestamp
	if ts.After(p.now) {
		p.now = ts
	}
	var first gopacket.Decoder
	switch lt {
	case linkTypeRawIPv4:
		first = layers.LayerTypeIPv4
	case linkTypeRawIPv6:
		first = layers.LayerTypeIPv6
	case linkTypeRawAlt1, linkTypeRawAlt2:
		first = layers.LinkTypeRaw
	case linkTypeLinuxSLL:
		if len(data) < 20 {
			p.decodeError(fmt.Errorf("SLL2 header truncated (%d bytes)", len(data)))
			return nil
		}
		first = layers.EthernetType(binary.BigEndian.Uint16(data[0:2]))
		data = data[20:]
	default:
		if lt > 255 {
			p.decodeError(fmt.Errorf("link type %d is not supported", lt))
			return nil
		}
		first = layers.LinkType(lt)
	}
	pkt := gopacket.NewPacket(data, first, decodeOpts)
	if el := pkt.ErrorLayer(); el != nil && pkt.Layer(layers.LayerTypeTCP) == nil {
		p.decodeError(el.Error())
		return nil
	}

	var src, dst netip.Addr
	var tcp *layers.TCP
	var fragErr error
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
			p.stats.Fragments++
			whole, err := p.defrag4.DefragIPv4WithTimestamp(ip, ts)
			if err != nil {
				p.stats.skip("ipv4 fragments dropped", 1)
				fragErr = err
				break
			}
			if whole == nil {
				return nil // waiting for the other fragments
			}
			p.stats.Reassembled++
			if whole.Protocol != layers.IPProtocolTCP {
				p.stats.NonTCP++
				return nil
			}
			tcp = &layers.TCP{}
			if err := tcp.DecodeFromBytes(whole.Payload, gopacket.NilDecodeFeedback); err != nil {
				p.decodeError(fmt.Errorf("reassembled IPv4 datagram: %v", err))
				return nil
			}
		} else if ip.Protocol != layers.IPProtocolTCP {
			p.stats.NonTCP++
			return nil
		}
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		if fl := pkt.Layer(layers.LayerTypeIPv6Fragment); fl != nil {
			f := fl.(*layers.IPv6Fragment)
			p.stats.Fragments++
			payload, proto, done, err := p.defrag6.add(src, dst, f, ts)
			if err != nil {
				p.stats.skip("ipv6 fragments dropped", 1)
				fragErr = err
				break
			}
			if !done {
				return nil
			}
			p.stats.Reassembled++
			if proto != layers.IPProtocolTCP {
				p.stats.NonTCP++
				return nil
			}
			tcp = &layers.TCP{}
			if err := tcp.DecodeFromBytes(payload, gopacket.NilDecodeFeedback); err != nil {
				p.decodeError(fmt.Errorf("reassembled IPv6 datagram: %v", err))
				return nil
			}
		}
	default:
		if el := pkt.ErrorLayer(); el != nil {
			p.decodeError(el.Error())
		} else {
			p.stats.NonTCP++
		}
		return nil
	}
	if fragErr != nil {
		p.problem(fmt.Sprintf("%s:packet %d", p.name, p.stats.Packets), fragErr)
		return nil
	}
	if tcp == nil {
		t, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			if el := pkt.ErrorLayer(); el != nil {
				p.decodeError(el.Error())
			} else {
				p.stats.NonTCP++
			}
			return nil
		}
		tcp = t
	}
	if p.stats.Packets%4096 == 0 {
		p.sweep()
	}
	return p.segment(netip.AddrPortFrom(src, uint16(tcp.SrcPort)), netip.AddrPortFrom(dst, uint16(tcp.DstPort)), tcp, ts)
}

func (p *pcapReader) decodeError(err error) {
	p.stats.DecodeErrors++
	p.problem(fmt.Sprintf("%s:packet %d", p.name, p.stats.Packets), fmt.Errorf("undecodable packet: %v", err))
}

// sweep drops stale fragments and flushes idle connections.
func (p *pcapReader) sweep() {
	cut := p.now.Add(-PcapFlowIdle)
	p.defrag4.DiscardOlderThan(p.now.Add(-time.Minute))
	p.defrag6.discardOlderThan(p.now.Add(-time.Minute))
	var idle []*tcpConn
	for _, c := range p.conns {
		if c.last.Before(cut) {
			idle = append(idle, c)
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].id < idle[j].id })
	for _, c := range idle {
		p.stats.skip("idle connections flushed early", 1)
		p.closeConn(c)
	}
}

// ip6Defrag reassembles IPv6 fragments (RFC 8200 §4.5), within bounds.
type ip6Defrag struct {
	pending map[ip6FragKey]*ip6Frags
}

type ip6FragKey struct {
	src, dst netip.Addr
	id       uint32
}

type ip6Frags struct {
	first time.Time
	proto layers.IPProtocol
	total int // length of the datagram once the last fragment is in; -1 before
	parts []ip6Part
	size  int
}

type ip6Part struct {
	off  int
	data []byte
}

const (
	ip6MaxPending = 1024
	ip6MaxParts   = 256
	ip6MaxSize    = 65535
)

func newIP6Defrag() *ip6Defrag { return &ip6Defrag{pending: map[ip6FragKey]*ip6Frags{}} }

// add takes one fragment; done reports a whole datagram in payload.
func (d *ip6Defrag) add(src, dst netip.Addr, f *layers.IPv6Fragment, ts time.Time) (payload []byte, proto layers.IPProtocol, done bool, err error) {
	off := int(f.FragmentOffset) * 8
	if off == 0 && !f.MoreFragments { // atomic fragment (RFC 6946)
		return f.Payload, f.NextHeader, true, nil
	}
	k := ip6FragKey{src, dst, f.Identification}
	fr := d.pending[k]
	if fr == nil {
		if len(d.pending) >= ip6MaxPending {
			return nil, 0, false, errors.New("too many IPv6 datagrams being reassembled")
		}
		fr = &ip6Frags{first: ts, total: -1}
		d.pending[k] = fr
	}
	if off+len(f.Payload) > ip6MaxSize || len(fr.parts) >= ip6MaxParts {
		delete(d.pending, k)
		return nil, 0, false, errors.New("IPv6 fragments exceed 65535 bytes or 256 parts")
	}
	if off == 0 {
		fr.proto = f.NextHeader
	}
	if !f.MoreFragments {
		fr.total = off + len(f.Payload)
	}
	fr.parts = append(fr.parts, ip6Part{off, f.Payload})
	fr.size += len(f.Payload)
	if fr.total < 0 || fr.size < fr.total {
		return nil, 0, false, nil
	}
	sort.SliceStable(fr.parts, func(i, j int) bool { return fr.parts[i].off < fr.parts[j].off })
	buf := make([]byte, 0, fr.total)
	for _, pt := range fr.parts {
		if pt.off > len(buf) {
			return nil, 0, false, nil // a hole: wait for more
		}
		if end := pt.off + len(pt.data); end > len(buf) {
			buf = append(buf, pt.data[len(buf)-pt.off:]...)
		}
	}
	if len(buf) < fr.total {
		return nil, 0, false, nil
	}
	delete(d.pending, k)
	return buf[:fr.total], fr.proto, true, nil
}

func (d *ip6Defrag) discardOlderThan(t time.Time) {
	for k, fr := range d.pending {
		if fr.first.Before(t) {
			delete(d.pending, k)
		}
	}
}
