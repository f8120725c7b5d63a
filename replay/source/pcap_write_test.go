package source

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/models"
)

// TestPcapWriteReadBack writes records as a capture and reads them back
// through ReadPcap: same requests, statuses, sizes and identities.
func TestPcapWriteReadBack(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var in []*Record
	for i := 0; i < 50; i++ {
		r := &Record{TS: t0.Add(time.Duration(i) * time.Second), Request: models.Request{
			Method: "GET", Path: "/items/" + strings.Repeat("9", i%5+1), Query: "lang=en",
			Headers: []models.Header{{Name: "user-agent", Value: "c/1"}}, Source: "frontend.shop", Destination: "cart.shop",
			Status: []int{200, 404}[i%2], ResponseBytes: int64(100 + i), Duration: 3 * time.Millisecond}}
		if i == 7 {
			r.Request.Method, r.Request.Body = "POST", []byte(strings.Repeat("b", 3000))
		}
		if i == 9 {
			r.Request.ResponseBytes = 50_000_000 // capped in the capture
		}
		in = append(in, r)
	}
	var buf bytes.Buffer
	w, err := NewPcapWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range in {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ids, err := LoadIdentities(strings.NewReader(w.Addresses()), "ids")
	if err != nil || len(ids) != 2 {
		t.Fatalf("identities %v %v", ids, err)
	}
	var out []*Record
	_, err = ReadPcap(&buf, "gen.pcap", PcapOptions{Identities: ids}, func(r *Record) error { out = append(out, r); return nil },
		func(p Problem) { t.Errorf("problem: %v", p) })
	if err != nil || len(out) != len(in) {
		t.Fatalf("read back %d of %d: %v", len(out), len(in), err)
	}
	for i := range in {
		a, b := &in[i].Request, &out[i].Request
		want := a.ResponseBytes
		if want > MaxPcapResponse {
			want = MaxPcapResponse
		}
		if a.Method != b.Method || a.Path != b.Path || a.Query != b.Query || a.Source != b.Source || a.Destination != b.Destination ||
			a.Status != b.Status || b.ResponseBytes != want || string(a.Body) != string(b.Body) || !out[i].TS.Equal(in[i].TS) {
			t.Fatalf("record %d changed:\n%+v\n%+v", i, a, b)
		}
	}
}
