package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/internal/devca"
	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// TestForgedRecordsChangeNothing is the poisoning probe of issue 13 as a
// test. With the collector on mTLS (real certificates, a real redis-server),
// users.shop's sidecar ships its traffic from four callers over four routes
// and a model is trained. Then the frontend's sidecar, with its own valid
// identity, ships 10,000 forged frontend → users.shop records: every one is
// refused and counted, none is stored, and the next training round leaves
// users.shop's section as it was (before, forged records shrank it from 4
// sources and 16 edges to 1 and 1).
func TestForgedRecordsChangeNothing(t *testing.T) {
	ca, err := devca.New("mesh")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Server("", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	rds := redistest.Start(t)
	s := startWith(t, rds.Addr, func(c *Config) {
		c.Collector.Identity, c.Collector.Tokens = collector.ModeTLS, nil
		c.CollectorTLS = &tls.Config{Certificates: []tls.Certificate{leaf.Cert}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	})
	sidecar := func(sa string) *http.Client {
		l, err := ca.Client("spiffe://cluster.local/ns/shop/sa/" + sa)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientTLS(l)}}
	}
	type answer struct {
		code int
		resp collector.Response
	}
	send := func(c *http.Client, body string) answer {
		t.Helper()
		req, _ := http.NewRequest("POST", s.CollectorURL+"/v1/records", strings.NewReader(body))
		req.Header.Set(record.IdempotencyKeyHeader, fmt.Sprintf("poison-test-%016d", batchKeys.Add(1)))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a answer
		a.code = resp.StatusCode
		_ = json.NewDecoder(resp.Body).Decode(&a.resp)
		return a
	}
	line := func(ts time.Time, src, route string) string {
		return fmt.Sprintf(`{"ts_ns":%d,"route":%q,"score":0,"request":{"Method":"GET","Path":%q,"Source":"spiffe://cluster.local/ns/shop/sa/%s","Destination":"users.shop","Status":200}}`+"\n",
			ts.UnixNano(), route, route, src)
	}
	sources := []string{"frontend", "checkout", "orders", "accounts"}
	routes := []string{"/users/{num}", "/users", "/users/{num}/addresses", "/users/{num}/preferences"}
	users := sidecar("users")
	now := time.Now()
	for batch := 0; batch < 4; batch++ {
		var b strings.Builder
		for i := 0; i < 500; i++ {
			n := batch*500 + i
			b.WriteString(line(now.Add(time.Duration(n-2000)*time.Millisecond), sources[n%4], routes[(n/4)%4]))
		}
		if a := send(users, b.String()); a.code != 200 || a.resp.Accepted != 500 {
			t.Fatalf("users.shop's own records: %d %+v", a.code, a.resp)
		}
	}
	eventually(t, "a leader", s.elector.Leading)
	before := trainSection(t, s, "users.shop")
	if len(before.Sources) != 4 || len(before.Edges) != 16 {
		t.Fatalf("users.shop learned %d sources and %d edges from its own traffic, want 4 and 16", len(before.Sources), len(before.Edges))
	}

	// The frontend's sidecar, holding a valid identity of its own, forges
	// 10,000 frontend → users.shop records in ten batches.
	frontend := sidecar("frontend")
	refusedBefore := scrape(t, s, `meshward_collector_records_refused_total{reason="not_sender_workload"}`)
	for batch := 0; batch < 10; batch++ {
		var b strings.Builder
		for i := 0; i < 1000; i++ {
			b.WriteString(line(time.Now(), "frontend", "/users/{num}/export"))
		}
		if a := send(frontend, b.String()); a.code != 400 || a.resp.Accepted != 0 || a.resp.Rejected != 1000 {
			t.Fatalf("forged batch %d: %d %+v", batch, a.code, a.resp)
		}
	}
	if n := scrape(t, s, `meshward_collector_records_refused_total{reason="not_sender_workload"}`) - refusedBefore; n != 10_000 {
		t.Errorf("refused records counted %v, want 10000", n)
	}
	after := trainSection(t, s, "users.shop")
	if !reflect.DeepEqual(before.Sources, after.Sources) || !reflect.DeepEqual(before.Routes, after.Routes) || !reflect.DeepEqual(before.Edges, after.Edges) {
		t.Errorf("users.shop changed: %d sources, %d routes, %d edges before; %d, %d, %d after", len(before.Sources), len(before.Routes), len(before.Edges),
			len(after.Sources), len(after.Routes), len(after.Edges))
	}
}

// trainSection runs a training round and returns the named section of the
// model in force after it.
func trainSection(t *testing.T, s *Server, workload string) *models.Workload {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Train(ctx); err != nil {
		t.Fatalf("training: %v", err)
	}
	sha, err := s.store.Current(ctx)
	if err != nil || sha == "" {
		t.Fatalf("no model in force (%v)", err)
	}
	m, err := s.store.LoadModel(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	w := m.Workload(workload)
	if w == nil || w.Name != workload {
		t.Fatalf("the model has no section %s", workload)
	}
	return w
}
