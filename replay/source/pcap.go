package source

import (
	"bufio"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/ip4defrag"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Default bounds of ReadPcap; PcapOptions may lower or raise them.
const (
	// DefaultPcapMaxFlowBytes caps the payload buffered for one direction of
	// one TCP connection; later bytes are dropped and counted.
	DefaultPcapMaxFlowBytes = 16 << 20
	// DefaultPcapMaxFlows caps the TCP connections tracked at once; past it
	// the least recently active connections are flushed early.
	DefaultPcapMaxFlows = 65536
	// PcapFlowIdle is how long (in capture time) a connection may stay
	// silent before it is flushed as if it had ended.
	PcapFlowIdle = 5 * time.Minute
	// DefaultPcapMaxBufferedBytes caps the payload buffered across all
	// connections at once; past it the least recently active connections
	// are flushed early.
	DefaultPcapMaxBufferedBytes = 1 << 30
	// DefaultPcapMaxPendingBytes caps the requests held back so that
	// requests come out in time order (one that an open connection's
	// earlier request could precede waits); past it the oldest come out
	// early, reported.
	DefaultPcapMaxPendingBytes = 256 << 20
	// pcapMaxPacket bounds one captured packet.
	pcapMaxPacket = 256 << 10
)

// PcapOptions configure ReadPcap.
type PcapOptions struct {
	Overrides Overrides
	// Identities maps an IP address (string form, as net.IP.String()) to a
	// workload/principal name; addresses not in it keep "ip" (no port).
	Identities map[string]string
	// MaxFlowBytes caps buffered payload per connection direction
	// (0: DefaultPcapMaxFlowBytes).
	MaxFlowBytes int
	// MaxFlows caps the connections tracked at once (0: DefaultPcapMaxFlows).
	MaxFlows int
	// MaxBufferedBytes caps the payload buffered across connections (0:
	// DefaultPcapMaxBufferedBytes): a compressed capture of many long
	// connections would otherwise unpack into memory whole.
	MaxBufferedBytes int
	// MaxPendingBytes caps the requests held back for time order (0:
	// DefaultPcapMaxPendingBytes): a capture whose connections stay open
	// long would otherwise hold every request in memory until its end.
	MaxPendingBytes int
	// Early, when set, counts the requests emitted early and the
	// connections read early for MaxBufferedBytes (the caller's metric).
	Early *atomic.Int64
}

// PcapStats counts what a capture held: packets, decode errors, TCP flows,
// HTTP flows, non-HTTP flows skipped, requests, responses paired, and
// skipped reasons.
type PcapStats struct {
	// Packets is the number of packet records read.
	Packets int
	// DecodeErrors counts packets whose link, IP or TCP headers did not decode.
	DecodeErrors int
	// NonTCP counts packets that were not TCP (ARP, UDP, ICMP...).
	NonTCP int
	// Fragments counts IPv4 and IPv6 fragments seen; Reassembled the
	// datagrams rebuilt from them.
	Fragments, Reassembled int
	// TCPFlows counts TCP connections with a SYN or some payload.
	TCPFlows int
	// HTTPFlows counts connections that carried HTTP/1.x.
	HTTPFlows int
	// NonHTTPFlows counts connections with payload that was not HTTP (skipped).
	NonHTTPFlows int
	// Requests is the number of requests emitted.
	Requests int
	// Early counts the requests emitted before an open connection's
	// earlier ones, the requests held back being over MaxPendingBytes.
	Early int
	// Responses is the number of responses paired with a request.
	Responses int
	// Problems is the number of times bad was called.
	Problems int
	// Skipped counts what was dropped or ignored, by reason (bytes or items,
	// as the reason says).
	Skipped map[string]int
}

func (s *PcapStats) skip(reason string, n int) {
	if s.Skipped == nil {
		s.Skipped = map[string]int{}
	}
	s.Skipped[reason] += n
}

// Capture file magic numbers (as read little-endian).
const (
	magicPcapMicro   = 0xa1b2c3d4
	magicPcapNano    = 0xa1b23c4d
	magicPcapMicroBE = 0xd4c3b2a1
	magicPcapNanoBE  = 0x4d3cb2a1
	magicPcapng      = 0x0a0d0d0a
)

// packetSource is the part of pcapgo's readers ReadPcap uses.
type packetSource interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// ReadPcap reads a pcap or pcapng stream (detected from its magic number).
// It calls emit for each HTTP request (in order of request start time) and
// bad for each malformed part (with file name and byte offset or packet
// number in Pos), and keeps reading after errors. It returns the stats and
// an error only for failures that stop reading (e.g. not a capture at all,
// or emit's error). Each TCP connection's two directions are reassembled
// and read by the same HTTP/1 reader as ReadRawHTTP's, so a request makes
// the same Record in either container (addresses, times and the paired
// response aside).
func ReadPcap(r io.Reader, name string, opt PcapOptions, emit func(*Record) error, bad func(Problem)) (PcapStats, error) {
	p := newPcapReader(name, opt, emit, bad)
	br := bufio.NewReaderSize(r, 1<<16)
	head, err := br.Peek(4)
	if err != nil {
		return p.stats, fmt.Errorf("%s: not a pcap or pcapng capture: %v", name, err)
	}
	var src packetSource
	var link func(gopacket.CaptureInfo) uint32
	switch m := binary.LittleEndian.Uint32(head); {
	case m == magicPcapng:
		ng, err := safeNgReader(&ngGuard{r: br})
		if err != nil {
			return p.stats, fmt.Errorf("%s: bad pcapng section header: %v", name, err)
		}
		src = ng
		first := ng.LinkType()
		link = func(ci gopacket.CaptureInfo) uint32 {
			if len(ci.AncillaryData) > 0 {
				if lt, ok := ci.AncillaryData[0].(layers.LinkType); ok {
					return uint32(lt)
				}
			}
			return uint32(first)
		}
	case m == magicPcapMicro || m == magicPcapNano || m == magicPcapMicroBE || m == magicPcapNanoBE ||
		head[0] == 0x1f && head[1] == 0x8b: // pcapgo reads gzipped pcap
		// pcapgo keeps the link type in a byte: read it from the header.
		var lt uint32
		if h, err := br.Peek(24); err == nil && head[0] != 0x1f {
			if m == magicPcapMicro || m == magicPcapNano {
				lt = binary.LittleEndian.Uint32(h[20:24])
			} else {
				lt = binary.BigEndian.Uint32(h[20:24])
			}
		}
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return p.stats, fmt.Errorf("%s: bad pcap file header: %v", name, err)
		}
		// Some writers put packets larger than their snap length, others a
		// snap length of 4 GiB: accept any packet up to pcapMaxPacket, and
		// allocate no more.
		pr.SetSnaplen(pcapMaxPacket)
		src = pr
		if lt == 0 {
			lt = uint32(pr.LinkType())
		}
		link = func(gopacket.CaptureInfo) uint32 { return lt }
	default:
		return p.stats, fmt.Errorf("%s: not a pcap or pcapng capture (magic %08x)", name, m)
	}
	for {
		data, ci, err := safeRead(src)
		if err != nil {
			if err != io.EOF {
				p.problem(fmt.Sprintf("%s:packet %d", name, p.stats.Packets+1),
					fmt.Errorf("capture ends in a broken record (%v); the rest of the file is not read", err))
			}
			break
		}
		p.stats.Packets++
		if err := p.packet(data, ci, link(ci)); err != nil {
			return p.stats, err
		}
	}
	if err := p.finish(); err != nil {
		return p.stats, err
	}
	return p.stats, nil
}

// safeNgReader opens a pcapng reader; pcapgo v1.1.19 panics on some
// malformed blocks (e.g. an if_tsresol of 0 divides by zero).
func safeNgReader(r io.Reader) (ng *pcapgo.NgReader, err error) {
	defer func() {
		if v := recover(); v != nil {
			ng, err = nil, fmt.Errorf("malformed block (%v)", v)
		}
	}()
	return pcapgo.NewNgReader(r, pcapgo.NgReaderOptions{WantMixedLinkType: true})
}

// ngGuard passes a pcapng stream through, checking each block header
// before pcapgo sees it: pcapgo allocates whatever a packet block claims
// (up to 4 GiB), so blocks over 1 MiB and packets longer than their block
// or than pcapMaxPacket end the stream with an error instead.
type ngGuard struct {
	r     *bufio.Reader
	left  int // bytes of the current block not yet passed on
	order binary.ByteOrder
}

const ngMaxBlock = 1 << 20

func (g *ngGuard) Read(p []byte) (int, error) {
	if g.left == 0 {
		h, err := g.r.Peek(24)
		switch {
		case len(h) == 0:
			return 0, err
		case len(h) < 12: // a short tail: pcapgo reports it
			g.left = len(h)
		default:
			if binary.LittleEndian.Uint32(h) == magicPcapng {
				switch binary.LittleEndian.Uint32(h[8:]) {
				case 0x1a2b3c4d:
					g.order = binary.LittleEndian
				case 0x4d3c2b1a:
					g.order = binary.BigEndian
				default:
					return 0, errors.New("pcapng section header with a bad byte-order magic")
				}
			}
			if g.order == nil {
				return 0, errors.New("pcapng block before any section header")
			}
			typ, n := g.order.Uint32(h), g.order.Uint32(h[4:])
			if n < 12 || n > ngMaxBlock {
				return 0, fmt.Errorf("pcapng block of %d bytes", n)
			}
			var caplen uint32
			switch {
			case (typ == 6 || typ == 2) && len(h) >= 24: // enhanced, obsolete packet block
				caplen = g.order.Uint32(h[20:])
			case typ == 3: // simple packet block: original length
				caplen = g.order.Uint32(h[8:])
			}
			if caplen > n || caplen > pcapMaxPacket {
				return 0, fmt.Errorf("pcapng packet of %d bytes in a block of %d", caplen, n)
			}
			g.left = int(n)
		}
	}
	if len(p) > g.left {
		p = p[:g.left]
	}
	n, err := g.r.Read(p)
	g.left -= n
	return n, err
}

// safeRead reads the next packet, turning a panic of the reader into an error.
func safeRead(src packetSource) (data []byte, ci gopacket.CaptureInfo, err error) {
	defer func() {
		if v := recover(); v != nil {
			data, err = nil, fmt.Errorf("malformed block (%v)", v)
		}
	}()
	return src.ReadPacketData()
}

// pcapReader is the state of one ReadPcap call.
type pcapReader struct {
	name  string
	opt   PcapOptions
	emit  func(*Record) error
	bad   func(Problem)
	stats PcapStats

	conns    map[connKey]*tcpConn
	buffered int // payload bytes the open connections hold
	nextID   uint64
	defrag4  *ip4defrag.IPv4Defragmenter
	defrag6  *ip6Defrag
	now      time.Time // latest packet time

	pending      recordHeap
	pendingBytes int    // about the memory pending holds
	seq          uint64 // ties in pending
}

func newPcapReader(name string, opt PcapOptions, emit func(*Record) error, bad func(Problem)) *pcapReader {
	if opt.MaxFlowBytes <= 0 {
		opt.MaxFlowBytes = DefaultPcapMaxFlowBytes
	}
	if opt.MaxFlows <= 0 {
		opt.MaxFlows = DefaultPcapMaxFlows
	}
	if opt.MaxBufferedBytes <= 0 {
		opt.MaxBufferedBytes = DefaultPcapMaxBufferedBytes
	}
	if opt.MaxPendingBytes <= 0 {
		opt.MaxPendingBytes = DefaultPcapMaxPendingBytes
	}
	if bad == nil {
		bad = func(Problem) {}
	}
	return &pcapReader{
		name: name, opt: opt, emit: emit, bad: bad,
		stats:   PcapStats{Skipped: map[string]int{}},
		conns:   map[connKey]*tcpConn{},
		defrag4: ip4defrag.NewIPv4Defragmenter(),
		defrag6: newIP6Defrag(),
	}
}

func (p *pcapReader) problem(pos string, err error) {
	p.stats.Problems++
	p.bad(Problem{Pos: pos, Err: err})
}

// finish flushes every open connection and emits what is still pending.
func (p *pcapReader) finish() error {
	conns := make([]*tcpConn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	sort.Slice(conns, func(i, j int) bool { return conns[i].id < conns[j].id })
	for _, c := range conns {
		p.closeConn(c)
	}
	for p.pending.Len() > 0 {
		if err := p.emitRecord(p.pop()); err != nil {
			return err
		}
	}
	return nil
}

// drain emits the pending records that no open connection can precede.
func (p *pcapReader) drain() error {
	if p.pending.Len() == 0 {
		return nil
	}
	mark := p.now
	for _, c := range p.conns {
		if !c.firstData.IsZero() && c.firstData.Before(mark) {
			mark = c.firstData
		}
	}
	for p.pending.Len() > 0 && p.pending[0].rec.TS.Before(mark) {
		if err := p.emitRecord(p.pop()); err != nil {
			return err
		}
	}
	// Over the cap, the oldest come out though an open connection may
	// yet hold an earlier request.
	for p.pendingBytes > p.opt.MaxPendingBytes && p.pending.Len() > 0 {
		r := p.pop()
		if p.stats.Early == 0 {
			p.problem(r.Pos, fmt.Errorf("requests held back for time order passed %d bytes (connections open long): the oldest are emitted now, before requests of open connections that may be earlier", p.opt.MaxPendingBytes))
		}
		p.stats.Early++
		if p.opt.Early != nil {
			p.opt.Early.Add(1)
		}
		if err := p.emitRecord(r); err != nil {
			return err
		}
	}
	return nil
}

func (p *pcapReader) emitRecord(r *Record) error {
	p.stats.Requests++
	return p.emit(r)
}

func (p *pcapReader) push(r *Record) {
	p.seq++
	n := pendingSize(r)
	heap.Push(&p.pending, pendingRecord{rec: r, seq: p.seq, bytes: n})
	p.pendingBytes += n
}

// pop takes the oldest pending record.
func (p *pcapReader) pop() *Record {
	pr := heap.Pop(&p.pending).(pendingRecord)
	p.pendingBytes -= pr.bytes
	return pr.rec
}

// pendingSize is about the memory a pending record holds.
func pendingSize(r *Record) int {
	q := &r.Request
	n := 256 + len(r.Pos) + len(q.Method) + len(q.Path) + len(q.Query) + len(q.Body) + len(q.Source) + len(q.Destination)
	for _, h := range q.Headers {
		n += 32 + len(h.Name) + len(h.Value)
	}
	return n
}

// identity names an address: its workload from Identities, else the IP.
func (p *pcapReader) identity(a netip.Addr) string {
	s := net.IP(a.AsSlice()).String()
	if id, ok := p.opt.Identities[s]; ok {
		return id
	}
	return s
}

type pendingRecord struct {
	rec   *Record
	seq   uint64
	bytes int
}

// recordHeap orders records by request time, then by the order they were made.
type recordHeap []pendingRecord

func (h recordHeap) Len() int { return len(h) }
func (h recordHeap) Less(i, j int) bool {
	if !h[i].rec.TS.Equal(h[j].rec.TS) {
		return h[i].rec.TS.Before(h[j].rec.TS)
	}
	return h[i].seq < h[j].seq
}
func (h recordHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *recordHeap) Push(x any)   { *h = append(*h, x.(pendingRecord)) }
func (h *recordHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// LoadIdentities reads an address→workload map file: lines "ADDRESS NAME"
// (or "ADDRESS,NAME"), '#' comments; errors name file and line.
func LoadIdentities(r io.Reader, name string) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := sc.Text()
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = s[:i]
		}
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		var addr, who string
		if i := strings.IndexByte(s, ','); i >= 0 {
			addr, who = strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+1:])
			if strings.ContainsRune(who, ',') {
				return nil, fmt.Errorf("%s:%d: want \"ADDRESS,NAME\", got %q", name, line, s)
			}
		} else {
			f := strings.Fields(s)
			if len(f) != 2 {
				return nil, fmt.Errorf("%s:%d: want \"ADDRESS NAME\", got %q", name, line, s)
			}
			addr, who = f[0], f[1]
		}
		if who == "" || strings.ContainsAny(who, " \t") {
			return nil, fmt.Errorf("%s:%d: %q is not a workload name", name, line, who)
		}
		ip := net.ParseIP(addr)
		if ip == nil {
			return nil, fmt.Errorf("%s:%d: %q is not an IP address", name, line, addr)
		}
		key := ip.String()
		if prev, ok := out[key]; ok && prev != who {
			return nil, fmt.Errorf("%s:%d: %s is already %q", name, line, key, prev)
		}
		out[key] = who
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: line too long", name, line+1)
		}
		return nil, fmt.Errorf("%s:%d: %w", name, line+1, err)
	}
	return out, nil
}
