package source

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestReadJSONL(t *testing.T) {
	in := strings.Join([]string{
		`{"ts":"2026-11-25T10:00:00Z","src":"a","dst":"b","method":"GET","path":"/x/1?q=2","headers":{"User-Agent":"ua","Accept":["x","y"]},"status":200,"response_bytes":12,"duration_ms":1.5,"label":"normal"}`,
		`# a comment`,
		``,
		`{"method":"POST","path":"http://svc:8080/api?k=v","headers":[["Content-Type","text/plain"]],"body":"hello","ts":1700000000000000000,"label":"sqli","attack_type":"sqli"}`,
		`{"method":"GET"}`,
		`not json`,
		`{"method":"GET","path":"/","ts":"yesterday"}`,
		`{"method":"G T","path":"/","headers":[["only-name"]]}`,
		`{"method":"GET","path":"/last"}`,
	}, "\n")
	var recs []*Record
	var bad []Problem
	err := ReadJSONL(strings.NewReader(in), "f.jsonl", Overrides{Dst: "forced"}, func(r *Record) error { recs = append(recs, r); return nil }, func(p Problem) { bad = append(bad, p) })
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("read %d records, want 3 (the good lines, including the one after the bad ones)", len(recs))
	}
	r0 := recs[0]
	if r0.Pos != "f.jsonl:1" || r0.Request.Path != "/x/1" || r0.Request.Query != "q=2" || r0.Request.Destination != "forced" || r0.Request.Source != "a" {
		t.Errorf("first record %+v", r0)
	}
	if !r0.TS.Equal(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)) || r0.Request.Duration != 1500*time.Microsecond || r0.IsAttack() {
		t.Errorf("first record ts/duration/label: %v %v %v", r0.TS, r0.Request.Duration, r0.IsAttack())
	}
	if len(r0.Request.Headers) != 3 || r0.Request.Headers[0].Name != "accept" {
		t.Errorf("headers %+v (names lower-cased, sorted, lists expanded)", r0.Request.Headers)
	}
	r1 := recs[1]
	if r1.Request.Path != "/api" || r1.Request.Query != "k=v" || string(r1.Request.Body) != "hello" || !r1.IsAttack() || r1.TS.UnixNano() != 1700000000000000000 {
		t.Errorf("second record %+v", r1)
	}
	wantBad := map[string]string{"f.jsonl:5": "path: required", "f.jsonl:6": "not a JSON request record", "f.jsonl:7": "ts:", "f.jsonl:8": "method:"}
	if len(bad) != len(wantBad) {
		t.Fatalf("problems %v", bad)
	}
	for _, p := range bad {
		if w, ok := wantBad[p.Pos]; !ok || !strings.Contains(p.Error(), w) {
			t.Errorf("problem %v, want %q at that position", p, w)
		}
	}
	if !strings.Contains(bad[3].Error(), "headers:") {
		t.Errorf("line 8 should report both problems: %v", bad[3])
	}
}

// TestReadJSONLTooLong: a line over the limit is reported with its number
// and skipped; the lines after it are read.
func TestReadJSONLTooLong(t *testing.T) {
	in := `{"method":"GET","path":"/first"}` + "\n" +
		`{"method":"GET","path":"/` + strings.Repeat("a", MaxJSONLLine) + `"}` + "\n" +
		`{"method":"GET","path":"/third-one"}` + "\n" +
		`{"method":"GET","path":"/last"}` // no newline at the end
	var paths []string
	var bad []Problem
	err := ReadJSONL(strings.NewReader(in), "big.jsonl", Overrides{}, func(r *Record) error {
		paths = append(paths, r.Request.Path)
		return nil
	}, func(p Problem) { bad = append(bad, p) })
	if err != nil {
		t.Fatalf("one long line aborted the file: %v", err)
	}
	if strings.Join(paths, " ") != "/first /third-one /last" {
		t.Errorf("read %v, want the three short lines", paths)
	}
	if len(bad) != 1 || bad[0].Pos != "big.jsonl:2" || !strings.Contains(bad[0].Error(), "longer than") {
		t.Errorf("problems %v, want line 2 reported as too long", bad)
	}
	// A smaller limit, counted.
	var hits atomic.Int64
	bad = nil
	err = ReadJSONLWith(strings.NewReader(in), "small.jsonl", Overrides{}, Limits{MaxEntryBytes: 32, Hits: &hits}, func(*Record) error { return nil },
		func(p Problem) { bad = append(bad, p) })
	if err != nil || len(bad) != 2 || hits.Load() != 2 || bad[1].Pos != "small.jsonl:3" {
		t.Errorf("limit 32: %v, problems %v, hits %d", err, bad, hits.Load())
	}
}
