package xds

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// BenchmarkRollout1000 connects 1,000 ADS clients (50 workload groups, over
// 10 HTTP/2 connections), publishes a new model that changes every group's
// section, and reports how long the clients took to receive theirs: p50-ms
// and p99-ms (target p99 ≤ 1 s). internal/scale measures one changed
// section reaching its group.
func BenchmarkRollout1000(b *testing.B) {
	const clients, groups, conns = 1000, 50, 10
	srv := startServer(b, 0)
	ctx0 := context.Background()
	var names []string
	for g := 0; g < groups; g++ {
		names = append(names, fmt.Sprintf("svc-%d.mesh", g))
	}
	var p50s, p99s []float64
	for i := 0; b.Loop(); i++ {
		first, firstSecs := release(b, uint64(2*i+1), names...)
		next, nextSecs := release(b, uint64(2*i+2), names...)
		if err := srv.Publish(ctx0, first, firstSecs); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var ccs []*grpc.ClientConn
		for c := 0; c < conns; c++ {
			cc, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			ccs = append(ccs, cc)
		}
		var ready, done sync.WaitGroup
		got := make([]time.Time, clients)
		ready.Add(clients)
		done.Add(clients)
		for n := 0; n < clients; n++ {
			go func(n int) {
				defer done.Done()
				st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(ccs[n%conns]).StreamAggregatedResources(ctx)
				if err != nil {
					ready.Done()
					return
				}
				nd := node(fmt.Sprintf("envoy-%d", n), fmt.Sprintf("svc-%d", n%groups), "mesh")
				req := &discoveryv3.DiscoveryRequest{Node: nd, TypeUrl: resourcev3.ExtensionConfigType, ResourceNames: []string{FilterName}}
				_ = st.Send(req)
				resp, err := st.Recv() // the first model
				ready.Done()
				if err != nil {
					return
				}
				req.VersionInfo, req.ResponseNonce = resp.VersionInfo, resp.Nonce
				_ = st.Send(req) // ACK
				for {
					resp, err := st.Recv()
					if err != nil {
						return
					}
					if resp.VersionInfo == next.Sections[names[n%groups]] {
						got[n] = time.Now()
						return
					}
				}
			}(n)
		}
		ready.Wait()
		start := time.Now()
		if err := srv.Publish(ctx0, next, nextSecs); err != nil {
			b.Fatal(err)
		}
		done.Wait()
		cancel()
		for _, cc := range ccs {
			cc.Close()
		}
		lat := make([]float64, 0, clients)
		for _, at := range got {
			if at.IsZero() {
				b.Fatal("a client never received the new model")
			}
			lat = append(lat, float64(at.Sub(start))/float64(time.Millisecond))
		}
		sort.Float64s(lat)
		p50s = append(p50s, lat[len(lat)/2])
		p99s = append(p99s, lat[len(lat)*99/100])
	}
	sort.Float64s(p50s)
	sort.Float64s(p99s)
	b.ReportMetric(p50s[len(p50s)/2], "p50-ms")
	b.ReportMetric(p99s[len(p99s)/2], "p99-ms")
}
