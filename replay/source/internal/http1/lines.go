package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"github.com/meshward/meshward/models"
)

// byteSource is what the line reader needs of its input: *bufio.Reader for
// a stream, bytesSource for bytes already in memory (a reassembled TCP
// stream), which it reads without copying them into another buffer first.
type byteSource interface {
	ReadSlice(delim byte) ([]byte, error)
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Buffered() int
}

// bytesSource is a byteSource over a byte slice.
type bytesSource struct {
	b []byte
	i int
}

func (s *bytesSource) ReadSlice(delim byte) ([]byte, error) {
	rest := s.b[s.i:]
	if len(rest) == 0 {
		return nil, io.EOF
	}
	k := bytes.IndexByte(rest, delim)
	if k < 0 {
		s.i = len(s.b)
		return rest, io.EOF
	}
	s.i += k + 1
	return rest[:k+1], nil
}

func (s *bytesSource) Peek(n int) ([]byte, error) {
	rest := s.b[s.i:]
	if n > len(rest) {
		return rest, io.EOF
	}
	return rest[:n], nil
}

func (s *bytesSource) Discard(n int) (int, error) {
	n = min(n, len(s.b)-s.i)
	s.i += n
	return n, nil
}

func (s *bytesSource) Buffered() int { return len(s.b) - s.i }

var crlf = []byte("\r\n")

// line is one line of input.
type line struct {
	off  int64  // offset of its first byte
	b    []byte // content without the line end, at most the limit it was read with
	end  string // the line end: "\r\n", "\n", or "" at the end of input
	n    int    // bytes consumed, line end included
	full int64  // length of the content without the line end
	long bool   // content longer than the limit
}

// lineReader reads lines with their offsets, with one line of push-back.
type lineReader struct {
	src     byteSource
	off     int64 // offset of the next byte of src
	pend    *line
	pendBuf []byte
	buf     []byte
}

// unread pushes l back: the next call of next returns it.
func (lr *lineReader) unread(l line) {
	lr.pendBuf = append(lr.pendBuf[:0], l.b...)
	l.b = lr.pendBuf
	lr.pend = &l
}

// offset is the offset of the next line next returns.
func (lr *lineReader) offset() int64 {
	if lr.pend != nil {
		return lr.pend.off
	}
	return lr.off
}

// next returns the next line, keeping at most MaxLine bytes of it (a longer
// one is consumed whole and marked long); its bytes are valid until the
// next call. At the end of input it returns io.EOF.
func (lr *lineReader) next() (line, error) {
	if lr.pend != nil {
		l := *lr.pend
		lr.pend = nil
		return l, nil
	}
	l := line{off: lr.off}
	frag, err := lr.src.ReadSlice('\n')
	if !errors.Is(err, bufio.ErrBufferFull) {
		// The whole line in one slice (always, from bytes): no copy.
		lr.off += int64(len(frag))
		if err != nil && (len(frag) == 0 || !errors.Is(err, io.EOF)) {
			return l, err
		}
		l.n = len(frag)
		b := frag
		switch {
		case bytes.HasSuffix(b, crlf):
			l.end, b = "\r\n", b[:len(b)-2]
		case len(b) > 0 && b[len(b)-1] == '\n':
			l.end, b = "\n", b[:len(b)-1]
		}
		l.full = int64(len(b))
		l.long = len(b) > MaxLine
		l.b = b[:min(len(b), MaxLine)]
		return l, nil
	}
	lr.buf = lr.buf[:0]
	var total int64
	var last2 [2]byte
	for first := true; ; first = false {
		if !first {
			frag, err = lr.src.ReadSlice('\n')
		}
		total += int64(len(frag))
		if room := MaxLine + 2 - len(lr.buf); room > 0 {
			lr.buf = append(lr.buf, frag[:min(len(frag), room)]...)
		}
		for _, c := range frag[max(0, len(frag)-2):] {
			last2[0], last2[1] = last2[1], c
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		lr.off += total
		if err != nil && (total == 0 || !errors.Is(err, io.EOF)) {
			return l, err
		}
		break
	}
	switch {
	case total >= 2 && last2 == [2]byte{'\r', '\n'}:
		l.end = "\r\n"
	case total >= 1 && last2[1] == '\n':
		l.end = "\n"
	}
	l.n = int(total)
	l.full = total - int64(len(l.end))
	b := lr.buf[:min(int64(len(lr.buf)), l.full)]
	l.long = l.full > MaxLine
	l.b = b[:min(len(b), MaxLine)]
	return l, nil
}

// readN reads an n-byte block into body; io.ErrUnexpectedEOF when the input
// ends first (body then holds what there was).
func (lr *lineReader) readN(n int64, body *prefix) error {
	if lr.pend != nil {
		return errors.New("http1: internal error: block read after a pushed-back line")
	}
	for n > 0 {
		want := min(n, 32<<10)
		if buffered := int64(lr.src.Buffered()); buffered > 0 {
			want = min(want, buffered)
		}
		b, err := lr.src.Peek(int(want))
		if len(b) > 0 {
			body.add(b, int64(len(b)))
			_, _ = lr.src.Discard(len(b))
			lr.off += int64(len(b))
			n -= int64(len(b))
		}
		if err != nil && n > 0 {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// readAll reads everything up to the end of input into body.
func (lr *lineReader) readAll(body *prefix) error {
	if lr.pend != nil {
		l := *lr.pend
		lr.pend = nil
		body.add(l.b, l.full)
		body.add([]byte(l.end), int64(len(l.end)))
	}
	err := lr.readN(1<<62, body)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return err
}

// MaxBody is how much of a body a message keeps: what the filter reads of
// a body by default (its max_body_bytes), so that a replayed capture is
// judged on what the sidecar would have judged (at 4 KiB, a payload after
// 4 KiB of padding was never seen).
const MaxBody = models.DefaultBodyLimit

// prefix collects the first MaxBody bytes of a body and counts all of
// them.
type prefix struct {
	b []byte
	n int64
}

// add appends b, the first bytes of n more, to the body.
func (p *prefix) add(b []byte, n int64) {
	if room := MaxBody - len(p.b); room > 0 {
		p.b = append(p.b, b[:min(len(b), room)]...)
	}
	p.n += n
}
