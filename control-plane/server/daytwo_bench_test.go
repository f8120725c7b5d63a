package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/xds"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models"
)

// BenchmarkAllowToLetThrough1000 measures how long an exception takes from
// meshward allow (POST /api/v1/exceptions, authenticated) to the filters:
// 1,000 ADS clients in 50 workload groups are served a model in enforce
// mode that also denies structural novelty (-filter-deny-reasons
// default,structure), so a request from a new caller is denied; a
// mesh-wide exception for that caller is added, and each client waits for
// the configuration that carries it. Client 0 then judges the denied
// request with the configuration received, through the filter's own
// decision code, and must let it through. Reported: p50-s and p99-s from
// the POST to a client's let-through configuration (target p99 ≤ 2 s), and
// first-let-through-s, when client 0 first let the request through.
func BenchmarkAllowToLetThrough1000(b *testing.B) {
	const clients, groups = 1000, 50
	redis := redistest.Start(b)
	cfg := testConfig()
	cfg.Redis, cfg.XDS.WasmURI, cfg.TrainEvery = redis.Addr, "/etc/meshward/meshward.wasm", 0
	cfg.XDS.Base.Mode, cfg.XDS.Base.DenyReasons = pluginconfig.ModeEnforce, []string{"default", "structure"}
	cfg.Rollout.CheckEvery = 20 * time.Millisecond
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	// A model of 50 workloads, each called by web only, 2,000 times: a
	// new caller alone is then surprising enough to be denied (with 200
	// calls each, codec 8 scores it 0.38, under the 0.5 threshold).
	tc := models.DefaultTrainConfig()
	tc.Now = time.Unix(0, 0)
	tr, _ := models.NewTrainer(tc)
	for g := 0; g < groups; g++ {
		for i := 0; i < 2000; i++ {
			tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/items/%d", i), Source: "spiffe://cluster.local/ns/mesh/sa/web", Destination: fmt.Sprintf("svc-%d.mesh", g)})
		}
	}
	m, err := tr.Model()
	if err != nil {
		b.Fatal(err)
	}
	enc, _ := models.Encode(m)
	v, err := s.store.PutModel(ctx, enc)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.store.SetCurrent(ctx, v); err != nil {
		b.Fatal(err)
	}
	newCaller := &models.Request{Method: "GET", Path: "/items/7", Source: "spiffe://cluster.local/ns/mesh/sa/orders", Destination: "svc-0.mesh"}
	// denied judges the new caller's request as client 0's filter would.
	denied := func(doc []byte) bool {
		st, err := pluginconfig.Parse(doc, "")
		if err != nil {
			b.Fatal(err)
		}
		w := st.Section
		sc := new(models.Scratch)
		verdict := w.ScoreWith(newCaller, sc)
		d := st.Policy.Decide(w, newCaller, &verdict, sc, st.Threshold, time.Now())
		return d.Denied()
	}
	var p50s, p99s, firsts []float64
	for i := 0; b.Loop(); i++ {
		type conn struct {
			c     *xds.Client
			first *xds.Update
		}
		cs := make([]conn, clients)
		for n := range cs {
			c, err := xds.Dial(s.ADSAddr, xds.Node(fmt.Sprintf("envoy-%d-%d", i, n), fmt.Sprintf("svc-%d", n%groups), "mesh"))
			if err != nil {
				b.Fatal(err)
			}
			u, err := c.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if err := c.ACK(u); err != nil {
				b.Fatal(err)
			}
			cs[n] = conn{c, u}
		}
		if !denied(cs[0].first.PluginConfig) {
			b.Fatal("the new caller is let through before the exception")
		}
		got := make([]time.Time, clients)
		var letThrough time.Time
		var wg sync.WaitGroup
		id := fmt.Sprintf("orders-%d", i)
		for n := range cs {
			wg.Add(1)
			go func(n int) {
				defer wg.Done()
				for {
					u, err := cs[n].c.Recv()
					if err != nil {
						return
					}
					_ = cs[n].c.ACK(u)
					if strings.Contains(string(u.PluginConfig), `"id":"`+id+`"`) {
						got[n] = time.Now()
						if n == 0 && !denied(u.PluginConfig) {
							letThrough = time.Now()
						}
						return
					}
				}
			}(n)
		}
		start := time.Now()
		code, body := adminDo(b, "POST", s.AdminURL+"/api/v1/exceptions", adminToken,
			`{"id":"`+id+`","workload":"*","caller":"spiffe://cluster.local/ns/mesh/sa/orders","reason":"bench","ttl":"1h"}`)
		if code != 201 {
			b.Fatalf("allow: %d %s", code, body)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			b.Fatal("not every client received the exception within 60 s")
		}
		for _, c := range cs {
			_ = c.c.Close()
		}
		if letThrough.IsZero() {
			b.Fatal("client 0 did not let the request through with the exception")
		}
		lat := make([]float64, 0, clients)
		for _, at := range got {
			if at.IsZero() {
				b.Fatal("a client never received the exception")
			}
			lat = append(lat, at.Sub(start).Seconds())
		}
		sort.Float64s(lat)
		p50s, p99s = append(p50s, lat[len(lat)/2]), append(p99s, lat[len(lat)*99/100])
		firsts = append(firsts, letThrough.Sub(start).Seconds())
		if code, body := adminDo(b, "DELETE", s.AdminURL+"/api/v1/exceptions/"+id, adminToken, ""); code != 200 {
			b.Fatalf("revoke: %d %s", code, body)
		}
	}
	sort.Float64s(p50s)
	sort.Float64s(p99s)
	sort.Float64s(firsts)
	b.ReportMetric(p50s[len(p50s)/2], "p50-s")
	b.ReportMetric(p99s[len(p99s)/2], "p99-s")
	b.ReportMetric(firsts[len(firsts)/2], "first-let-through-s")
}
