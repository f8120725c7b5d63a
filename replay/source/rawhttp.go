package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/meshward/meshward/replay/source/internal/http1"
)

// Bounds of one HTTP/1 request, raw or in a capture (package http1 reads
// both).
const (
	// MaxRawLine bounds a request line or a header line.
	MaxRawLine = http1.MaxLine
	// MaxRawHeader bounds the header section of a request.
	MaxRawHeader = http1.MaxHead
	// MaxRawHeaders bounds the number of header fields of a request.
	MaxRawHeaders = http1.MaxHeaders
)

// utf8BOM is skipped at the start of a raw file (editors write it).
var utf8BOM = []byte("\xef\xbb\xbf")

// ReadRawHTTP reads raw HTTP/1.x requests written one after another (the
// way CSIC-2010 and similar datasets ship them), calling emit for each
// request and bad for each malformed stretch of input. It stops early only
// when emit returns an error or the reader fails. Gzip-compressed input is
// decompressed transparently, and a UTF-8 byte order mark at the start is
// skipped.
//
// The requests are read by the same lenient HTTP/1 reader as a capture's
// TCP streams (ReadPcap; package internal/http1 has the rules), so the
// same bytes make the same requests in either container: blank lines may
// separate requests, lines may end in CRLF or LF, an http(s) absolute-URI
// target keeps its path and query, a fragment is dropped, a body is framed
// by Transfer-Encoding: chunked or Content-Length, and a body without
// either runs up to the next request line (less the blank lines before
// it) unless the method gives a body no meaning (GET, HEAD, DELETE,
// OPTIONS, TRACE, CONNECT). Malformed header lines and framing are
// reported and the request kept; a malformed request line is reported and
// skipped up to the next line that looks like a request line ("METHOD SP
// target SP HTTP/x.y"). Records have no labels (Overrides.Label sets
// them); RequestBytes is the length of the whole body. Pos is "name:offset
// N", the byte offset of the request line (or of the problem) in the
// decompressed input.
func ReadRawHTTP(r io.Reader, name string, o Overrides, emit func(*Record) error, bad func(Problem)) error {
	in, err := gunzipMaybe(r)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var base int64
	if head, _ := in.Peek(len(utf8BOM)); bytes.Equal(head, utf8BOM) {
		_, _ = in.Discard(len(utf8BOM))
		base = int64(len(utf8BOM))
	}
	pos := func(off int64) string { return name + ":offset " + strconv.FormatInt(off, 10) }
	hr := http1.NewReader(in, base, func(p http1.Problem) { bad(Problem{Pos: pos(p.Off), Err: p.Err}) })
	for {
		m, err := hr.ReadRequest()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", pos(hr.Offset()), err)
		}
		rec := &Record{Pos: pos(m.Off)}
		requestFrom(&rec.Request, m)
		o.Apply(rec)
		if err := emit(rec); err != nil {
			return err
		}
	}
}
