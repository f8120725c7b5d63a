package source

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/google/gopacket/layers"
)

// connKey names a TCP connection whichever way a packet goes: the lower
// endpoint first.
type connKey struct{ a, b netip.AddrPort }

func keyOf(src, dst netip.AddrPort) connKey {
	if src.Compare(dst) <= 0 {
		return connKey{src, dst}
	}
	return connKey{dst, src}
}

// tcpConn is one TCP connection; side 0 is the endpoint of its first packet.
type tcpConn struct {
	id        uint64
	ends      [2]netip.AddrPort
	half      [2]halfStream
	synFrom   int // side that sent a bare SYN, -1 if none seen
	synAckBy  int // side that sent SYN+ACK, -1 if none seen
	firstData time.Time
	last      time.Time
}

// halfStream buffers one direction's segments until the connection ends;
// it is put in order when the connection is flushed.
type halfStream struct {
	synSeen bool
	isn     uint32
	fin     bool
	segs    []tcpSeg
	bytes   int
}

type tcpSeg struct {
	seq  uint32
	ts   time.Time
	data []byte
}

// segment tracks one TCP segment.
func (p *pcapReader) segment(src, dst netip.AddrPort, tcp *layers.TCP, ts time.Time) error {
	k := keyOf(src, dst)
	c := p.conns[k]
	if c != nil && tcp.SYN && !tcp.ACK {
		// A new SYN on a known 4-tuple: port reuse unless it is the SYN
		// already seen, retransmitted.
		h := &c.half[c.side(src)]
		if !(h.synSeen && h.isn == tcp.Seq && c.half[0].bytes+c.half[1].bytes == 0) {
			p.closeConn(c)
			c = nil
		}
	}
	if c == nil {
		if len(p.conns) >= p.opt.MaxFlows {
			p.evict("connections flushed early (flow limit)")
		}
		p.nextID++
		c = &tcpConn{id: p.nextID, ends: [2]netip.AddrPort{src, dst}, synFrom: -1, synAckBy: -1}
		p.conns[k] = c
	}
	c.last = ts
	side := c.side(src)
	h := &c.half[side]
	seq := tcp.Seq
	if tcp.SYN {
		h.synSeen, h.isn = true, tcp.Seq
		seq++ // data on a SYN (TCP Fast Open) starts after it
		if tcp.ACK {
			c.synAckBy = side
		} else {
			c.synFrom = side
		}
	}
	if n := len(tcp.Payload); n > 0 {
		if h.bytes+n > p.opt.MaxFlowBytes {
			p.stats.skip("payload bytes over the per-flow cap", n)
		} else {
			h.segs = append(h.segs, tcpSeg{seq: seq, ts: ts, data: tcp.Payload})
			h.bytes += n
			p.buffered += n
			if c.firstData.IsZero() {
				c.firstData = ts
			}
		}
	}
	for p.buffered > p.opt.MaxBufferedBytes && len(p.conns) > 0 {
		const reason = "connections flushed early (buffered bytes limit)"
		if p.stats.Skipped[reason] == 0 {
			p.problem(fmt.Sprintf("%s:packet %d", p.name, p.stats.Packets), fmt.Errorf(
				"the open connections' payload passed %d bytes: the least recently active are read now, as if they had ended", p.opt.MaxBufferedBytes))
		}
		if p.opt.Early != nil {
			p.opt.Early.Add(1)
		}
		p.evict(reason)
	}
	switch {
	case p.conns[k] != c:
		// Flushed just now: what follows on it is a connection of its own.
	case tcp.RST:
		p.closeConn(c)
	case tcp.FIN:
		h.fin = true
		if c.half[0].fin && c.half[1].fin {
			p.closeConn(c)
		}
	}
	if p.stats.Packets%1024 == 0 || p.pendingBytes > p.opt.MaxPendingBytes {
		return p.drain()
	}
	return nil
}

func (c *tcpConn) side(src netip.AddrPort) int {
	if src == c.ends[0] {
		return 0
	}
	return 1
}

// evict flushes the least recently active eighth of the connections.
func (p *pcapReader) evict(reason string) {
	all := make([]*tcpConn, 0, len(p.conns))
	for _, c := range p.conns {
		all = append(all, c)
	}
	sort.Slice(all, func(i, j int) bool {
		if !all[i].last.Equal(all[j].last) {
			return all[i].last.Before(all[j].last)
		}
		return all[i].id < all[j].id
	})
	n := len(all)/8 + 1
	for _, c := range all[:n] {
		p.closeConn(c)
	}
	p.stats.skip(reason, n)
}

// tcpStream is one direction of a connection, in order.
type tcpStream struct {
	data  []byte
	gaps  []int    // offsets in data where bytes are missing before
	marks []tsMark // when the bytes from each offset were seen
}

type tsMark struct {
	off int
	ts  time.Time
}

// tsAt returns when the byte at off was captured.
func (s *tcpStream) tsAt(off int) time.Time {
	i := sort.Search(len(s.marks), func(i int) bool { return s.marks[i].off > off })
	if i == 0 {
		if len(s.marks) == 0 {
			return time.Time{}
		}
		return s.marks[0].ts
	}
	return s.marks[i-1].ts
}

// regionEnd is where the contiguous data that holds off ends.
func (s *tcpStream) regionEnd(off int) int {
	for _, g := range s.gaps {
		if g > off {
			return g
		}
	}
	return len(s.data)
}

// assemble puts the segments in sequence order: retransmitted bytes are
// dropped (the first copy wins), missing bytes become gaps. Without a SYN
// the stream starts at the lowest sequence number seen.
func (h *halfStream) assemble(st *PcapStats) *tcpStream {
	s := &tcpStream{}
	if len(h.segs) == 0 {
		return s
	}
	ref := h.segs[0].seq
	if h.synSeen {
		ref = h.isn + 1
	} else {
		min := int32(0)
		for _, sg := range h.segs {
			if d := int32(sg.seq - ref); d < min {
				min = d
			}
		}
		ref += uint32(min)
	}
	type ordered struct {
		off int64
		i   int
	}
	order := make([]ordered, len(h.segs))
	for i, sg := range h.segs {
		order[i] = ordered{int64(int32(sg.seq - ref)), i}
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].off < order[j].off })
	s.data = make([]byte, 0, h.bytes)
	cur := int64(0)
	for _, o := range order {
		sg := h.segs[o.i]
		off, d := o.off, sg.data
		end := off + int64(len(d))
		if end <= cur {
			st.skip("retransmitted bytes", len(d))
			continue
		}
		if off < cur {
			st.skip("retransmitted bytes", int(cur-off))
			d = d[cur-off:]
			off = cur
		}
		if off > cur {
			if len(s.data) > 0 {
				s.gaps = append(s.gaps, len(s.data))
			}
			st.skip("bytes missing from the capture", int(off-cur))
			cur = off
		}
		s.marks = append(s.marks, tsMark{len(s.data), sg.ts})
		s.data = append(s.data, d...)
		cur += int64(len(d))
	}
	h.segs = nil
	return s
}
