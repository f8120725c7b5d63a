package source

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// elements hands out the elements of one JSON array inside a document
// (log.entries of a HAR archive, data of a Jaeger answer) one at a time,
// each as its raw bytes, scanning the input byte by byte: an element longer
// than max is skipped to its end without being held, so a hostile file
// cannot make the reader hold more than max bytes of it at once
// (encoding/json's Decoder holds a whole value, and a string token whole).
// Values skipped on the way to the array are never held either.
type elements struct {
	r     *bufio.Reader
	off   int64 // bytes consumed
	max   int
	begun bool // the array's first element was read
	done  bool
}

func newElements(r io.Reader, max int) *elements {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64*1024)
	}
	return &elements{r: br, max: max}
}

var errJSONEnd = errors.New("unexpected end of JSON input")

func (e *elements) byte() (byte, error) {
	c, err := e.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, errJSONEnd
		}
		return 0, err
	}
	e.off++
	return c, nil
}

// peek returns the next byte that is not white space, without consuming it.
func (e *elements) peek() (byte, error) {
	for {
		c, err := e.byte()
		if err != nil {
			return 0, err
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		if err := e.r.UnreadByte(); err != nil {
			return 0, err
		}
		e.off--
		return c, nil
	}
}

func (e *elements) expect(want byte) error {
	c, err := e.peek()
	if err != nil {
		return err
	}
	if c != want {
		return fmt.Errorf("found %q where %q was expected", c, want)
	}
	_, err = e.byte()
	return err
}

// enter walks from the top of the document through the object members
// named by path (skipping every other member) and into the array found
// there.
func (e *elements) enter(path ...string) error {
	where := "top level"
	for _, key := range path {
		if err := e.member(key); err != nil {
			return fmt.Errorf("%s (byte %d): %w", where, e.off, err)
		}
		where = key
	}
	if err := e.expect('['); err != nil {
		return fmt.Errorf("%s (byte %d): %w", where, e.off, err)
	}
	return nil
}

// member reads the opening of an object and skips its members up to and
// including key's name, leaving the input at key's value.
func (e *elements) member(key string) error {
	if err := e.expect('{'); err != nil {
		return err
	}
	for first := true; ; first = false {
		c, err := e.peek()
		if err != nil {
			return err
		}
		if c == '}' {
			return fmt.Errorf("no %q member", key)
		}
		if !first {
			if err := e.expect(','); err != nil {
				return err
			}
		}
		if c, err = e.peek(); err != nil {
			return err
		}
		if c != '"' {
			return fmt.Errorf("found %q where a member name was expected", c)
		}
		// A name longer than any we look for is read, never kept.
		raw, long, err := e.value(nil, len(key)*6+2)
		if err != nil {
			return err
		}
		if err := e.expect(':'); err != nil {
			return err
		}
		var name string
		if !long && json.Unmarshal(raw, &name) == nil && name == key {
			return nil
		}
		if _, _, err := e.value(nil, 0); err != nil {
			return err
		}
	}
}

// next returns the array's next element appended to buf, or ok false after
// the last. An element longer than the limit comes back with tooBig set and
// only its first bytes.
func (e *elements) next(buf []byte) (elem []byte, tooBig, ok bool, err error) {
	if e.done {
		return nil, false, false, nil
	}
	c, err := e.peek()
	if err != nil {
		return nil, false, false, err
	}
	if c == ']' {
		e.done = true
		_, err := e.byte()
		return nil, false, false, err
	}
	if e.begun {
		if err := e.expect(','); err != nil {
			return nil, false, false, err
		}
	}
	e.begun = true
	elem, tooBig, err = e.value(buf, e.max)
	return elem, tooBig, err == nil, err
}

// value reads one JSON value, appending at most max of its bytes to buf
// (tooBig set when it is longer). It checks nesting and string syntax only:
// what it hands out is parsed by encoding/json.
func (e *elements) value(buf []byte, max int) (out []byte, tooBig bool, err error) {
	if _, err := e.peek(); err != nil {
		return buf, false, err
	}
	start := len(buf)
	keep := func(c byte) {
		if tooBig {
			return
		}
		if len(buf)-start >= max {
			tooBig = true
			return
		}
		buf = append(buf, c)
	}
	depth := 0
	for {
		c, err := e.byte()
		if err != nil {
			return buf, tooBig, err
		}
		switch c {
		case '"':
			keep(c)
			if err := e.restOfString(keep); err != nil {
				return buf, tooBig, err
			}
		case '{', '[':
			keep(c)
			depth++
			continue
		case '}', ']':
			if depth == 0 {
				return buf, tooBig, fmt.Errorf("unexpected %q at byte %d", c, e.off)
			}
			keep(c)
			depth--
		case ',', ':', ' ', '\t', '\r', '\n':
			if depth == 0 {
				// The end of a scalar: the byte belongs to what follows.
				if err := e.r.UnreadByte(); err != nil {
					return buf, tooBig, err
				}
				e.off--
				return buf, tooBig, nil
			}
			keep(c)
			continue
		default:
			keep(c)
			if depth == 0 {
				// A scalar (number, true, false, null): up to its end.
				if p, err := e.r.Peek(1); err == nil && !isDelim(p[0]) {
					continue
				}
				return buf, tooBig, nil
			}
			continue
		}
		if depth == 0 {
			return buf, tooBig, nil
		}
	}
}

func isDelim(c byte) bool {
	switch c {
	case ',', ':', ']', '}', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// restOfString reads a string after its opening quote, through its closing
// one.
func (e *elements) restOfString(keep func(byte)) error {
	for {
		c, err := e.byte()
		if err != nil {
			return err
		}
		keep(c)
		switch c {
		case '\\':
			c, err := e.byte()
			if err != nil {
				return err
			}
			keep(c)
		case '"':
			return nil
		}
	}
}
