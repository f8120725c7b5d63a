package source

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshward/meshward/replay/source/internal/http1"
)

// Formats recognised by Format.
const (
	FormatJSONL      = "jsonl"
	FormatHAR        = "har"
	FormatRaw        = "raw"
	FormatJaegerCSV  = "jaeger-csv"
	FormatJaegerJSON = "jaeger-json"
	FormatPcap       = "pcap"
)

// SniffLen is how many leading bytes Format wants to see; fewer will do.
const SniffLen = 4096

// gzipMagic starts every gzip member.
var gzipMagic = []byte{0x1f, 0x8b}

// Open opens path for reading, transparently decompressing it when it is
// gzip-compressed (recognised by its magic bytes, not by its name).
func Open(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := gunzipMaybe(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &readCloser{Reader: r, close: f.Close}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (rc *readCloser) Close() error { return rc.close() }

// gunzipMaybe returns r itself (buffered) or, when r starts with the gzip
// magic bytes, a reader of its decompressed content. Concatenated gzip
// members are read as one stream.
func gunzipMaybe(r io.Reader) (*bufio.Reader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok || br.Size() < 64*1024 {
		br = bufio.NewReaderSize(r, 64*1024)
	}
	head, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if !bytes.Equal(head, gzipMagic) {
		return br, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return bufio.NewReaderSize(zr, 64*1024), nil
}

// Format names the format of a file from its path and its first bytes
// (head, ideally SniffLen of them): "jsonl", "har", "raw", "jaeger-csv",
// "jaeger-json" or "pcap", and "" when it cannot tell. head may be the
// compressed bytes of a gzip file; a ".gz" suffix of path is ignored.
// The content decides when it is conclusive, the extension otherwise.
func Format(path string, head []byte) string {
	if bytes.HasPrefix(head, gzipMagic) {
		head = gunzipHead(head)
	}
	if isPcapMagic(head) {
		return FormatPcap
	}
	ext := strings.ToLower(filepath.Ext(path))
	if ext == ".gz" || ext == ".gzip" {
		ext = strings.ToLower(filepath.Ext(strings.TrimSuffix(path, filepath.Ext(path))))
	}
	if f := sniffText(head); f != "" {
		return f
	}
	switch ext {
	case ".jsonl", ".ndjson":
		return FormatJSONL
	case ".har":
		return FormatHAR
	case ".pcap", ".pcapng", ".cap":
		return FormatPcap
	case ".csv":
		return FormatJaegerCSV
	case ".http", ".raw", ".txt", ".req":
		return FormatRaw
	}
	return ""
}

// gunzipHead decompresses as much of a gzip prefix as it holds.
func gunzipHead(head []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(head))
	if err != nil {
		return nil
	}
	out := make([]byte, SniffLen)
	n, _ := io.ReadFull(zr, out)
	return out[:n]
}

func isPcapMagic(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	switch string(b[:4]) {
	case "\xa1\xb2\xc3\xd4", "\xd4\xc3\xb2\xa1", "\xa1\xb2\x3c\x4d", "\x4d\x3c\xb2\xa1", "\x0a\x0d\x0d\x0a":
		return true
	}
	return false
}

// sniffText recognises the text formats by their first bytes.
func sniffText(head []byte) string {
	b := bytes.TrimPrefix(head, []byte("\xef\xbb\xbf"))
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return ""
	}
	first := b
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		first = b[:i]
	}
	first = bytes.TrimRight(first, "\r")
	switch {
	case b[0] == '{':
		// The first key of a HAR is "log"; of a Jaeger answer "data" (or
		// "total", "limit", … before it); a JSONL record is one line.
		key := firstKey(b)
		switch {
		case key == "log":
			return FormatHAR
		case key == "data" || bytes.Contains(b, []byte(`"spans"`)) && bytes.Contains(b, []byte(`"traceID"`)):
			return FormatJaegerJSON
		case bytes.Contains(b, []byte(`"log"`)) && bytes.Contains(b, []byte(`"entries"`)):
			return FormatHAR
		case bytes.HasSuffix(bytes.TrimSpace(first), []byte("}")):
			return FormatJSONL
		}
	case http1.IsRequestLine(first):
		return FormatRaw
	default:
		h := strings.ToLower(string(first))
		if strings.HasPrefix(h, "traceid,") && strings.Contains(h, "spanid") {
			return FormatJaegerCSV
		}
	}
	return ""
}

// firstKey returns the first object key of a JSON text starting with '{'
// when it is a plain string.
func firstKey(b []byte) string {
	b = bytes.TrimLeft(b[1:], " \t\r\n")
	if len(b) == 0 || b[0] != '"' {
		return ""
	}
	end := bytes.IndexByte(b[1:], '"')
	if end < 0 {
		return ""
	}
	return string(b[1 : 1+end])
}
