package runner

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

// TestLiveRunner replays against a local listener that answers as an Envoy
// with the filter would (score header on responses; 403 with a reason when
// denying): results come back in input order, in-flight requests stay within
// the bound, and pacing is kept.
func TestLiveRunner(t *testing.T) {
	var inFlight, maxInFlight, got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		got.Add(1)
		if r.Header.Get("x-meshward-reason") != "" || r.Header.Get("connection") == "close-me" {
			t.Errorf("forwarded a header it must not: %v", r.Header)
		}
		if strings.HasPrefix(r.URL.Path, "/deny") {
			w.Header().Set("x-meshward-score", "0.990")
			w.Header().Set("x-meshward-reason", "new_caller,new_route")
			w.WriteHeader(403)
			return
		}
		w.Header().Set("x-meshward-score", "0.0"+r.URL.Query().Get("n"))
		w.WriteHeader(200)
	}))
	defer srv.Close()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var recs []*source.Record
	for i := 0; i < 40; i++ {
		path := "/ok"
		if i%10 == 9 {
			path = "/deny/x"
		}
		recs = append(recs, &source.Record{TS: t0.Add(time.Duration(i) * 5 * time.Millisecond), Request: models.Request{
			Method: "GET", Path: path, Query: "n=" + string(rune('0'+i%10)), Destination: "reviews.shop",
			Headers: []models.Header{{Name: "x-meshward-reason", Value: "forged"}, {Name: "connection", Value: "close-me"}, {Name: "accept", Value: "*/*"}}}})
	}
	start := time.Now()
	res, err := (&Live{URL: srv.URL, Speed: 1, Concurrency: 3}).Run(recs)
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < 150*time.Millisecond {
		t.Errorf("40 requests 5 ms apart at speed 1 took %v: pacing not kept", elapsed)
	}
	if got.Load() != 40 || maxInFlight.Load() > 3 {
		t.Errorf("%d requests served, at most %d in flight (bound 3)", got.Load(), maxInFlight.Load())
	}
	for i, r := range res {
		deny := i%10 == 9
		if r.Flagged != deny || !r.Scored || (!deny && r.Score != float64(i%10)/100) {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	// An unreachable listener leaves results unscored; it is not an error.
	srv.Close()
	res, err = (&Live{URL: srv.URL, Timeout: time.Second}).Run(recs[:2])
	if err != nil || res[0].Scored {
		t.Errorf("unreachable: %v %+v", err, res)
	}
	if _, err := (&Live{URL: "not a url"}).Run(recs); err == nil {
		t.Error("a bad URL was accepted")
	}
}
