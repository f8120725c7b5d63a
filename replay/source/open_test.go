package source

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "a.txt")
	zipped := filepath.Join(dir, "b.bin") // gzip recognised by content, not name
	mustWrite(t, plain, []byte("GET / HTTP/1.1\n\n"))
	mustWrite(t, zipped, gz([]byte("GET / HTTP/1.1\n\n")))
	for _, p := range []string{plain, zipped} {
		f, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil || string(b) != "GET / HTTP/1.1\n\n" {
			t.Errorf("%s: %q %v", p, b, err)
		}
	}
	bad := filepath.Join(dir, "bad.gz")
	mustWrite(t, bad, []byte{0x1f, 0x8b, 0, 0})
	if _, err := Open(bad); err == nil {
		t.Error("a broken gzip header opened without error")
	}
	if _, err := Open(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file opened without error")
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		path, head, want string
	}{
		{"x.jsonl", `{"method":"GET","path":"/"}` + "\n", FormatJSONL},
		{"x", `{"method":"GET","path":"/"}` + "\n{", FormatJSONL},
		{"x.ndjson.gz", "", FormatJSONL},
		{"x.json", "{\n  \"log\": {\n    \"version\": \"1.2\",", FormatHAR},
		{"x", "\ufeff{\"log\":{\"entries\":[", FormatHAR},
		{"x.har", "", FormatHAR},
		{"x.json", `{"data":[{"traceID":"a","spans":[`, FormatJaegerJSON},
		{"x.json", `{"total":1,"data":[{"traceID":"a","spans":[`, FormatJaegerJSON},
		{"trace.csv.gz", "", FormatJaegerCSV},
		{"x", "TraceID,SpanID,ParentID,PodName,OperationName\n", FormatJaegerCSV},
		{"x.dat", "\n\nGET http://localhost:8080/tienda1/index.jsp HTTP/1.1\r\nHost: x\r\n", FormatRaw},
		{"requests.txt", "", FormatRaw},
		{"x.bin", "\xd4\xc3\xb2\xa1\x02\x00\x04\x00", FormatPcap},
		{"x.bin", "\xa1\xb2\xc3\xd4", FormatPcap},
		{"x", "\xa1\xb2\x3c\x4d", FormatPcap},
		{"x", "\x4d\x3c\xb2\xa1", FormatPcap},
		{"x.txt", "\x0a\x0d\x0d\x0a\x1c\x00\x00\x00", FormatPcap}, // content wins
		{"x.pcapng", "", FormatPcap},
		{"x.bin", "hello", ""},
		{"x", "", ""},
	} {
		if got := Format(c.path, []byte(c.head)); got != c.want {
			t.Errorf("Format(%q, %q) = %q, want %q", c.path, c.head, got, c.want)
		}
	}
	// A gzip-compressed head is looked into.
	if got := Format("x.gz", gz([]byte(`{"log":{"entries":[]}}`))); got != FormatHAR {
		t.Errorf("gzip HAR: %q", got)
	}
	if got := Format("x", gz([]byte("\xd4\xc3\xb2\xa1\x02\x00\x04\x00"))); got != FormatPcap {
		t.Errorf("gzip pcap: %q", got)
	}
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
