package xds

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

func model(t testing.TB, seed uint64) ([]byte, string) {
	cfg := models.DefaultTrainConfig()
	cfg.Seed, cfg.Now = seed, time.Unix(0, 0)
	tr, _ := models.NewTrainer(cfg)
	for i := 0; i < 100; i++ {
		tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/r/%d", i), Source: "a", Destination: "reviews.shop"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := models.Encode(m)
	return b, m.SHA256()
}

// sectionSHA is the version of a workload's section of an encoded model.
func sectionSHA(t testing.TB, encoded []byte, workload string) string {
	t.Helper()
	m, err := models.Decode(encoded)
	if err != nil {
		t.Fatal(err)
	}
	b, err := models.EncodeSection(m, workload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := models.DecodeSection(b)
	if err != nil {
		t.Fatal(err)
	}
	return s.SHA256()
}

// startServer starts an ADS server on loopback, stopped with the test.
func startServer(t testing.TB, canaryShare float64) *Server {
	srv, err := New(Config{WasmURI: "/etc/meshward/meshward.wasm", Base: pluginconfig.Config{Mode: pluginconfig.ModeMonitor}, CanaryShare: canaryShare})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func node(id, workload, ns string) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{"WORKLOAD_NAME": workload, "NAMESPACE": ns})
	return &corev3.Node{Id: id, Metadata: md}
}

// envoy is a real gRPC ADS client standing in for an Envoy.
type envoy struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
}

func dial(t *testing.T, addr string, n *corev3.Node) *envoy {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := &envoy{t: t, stream: st, node: n}
	e.send("", "", nil)
	return e
}

func (e *envoy) send(version, nonce string, nack *status.Status) {
	err := e.stream.Send(&discoveryv3.DiscoveryRequest{Node: e.node, TypeUrl: resourcev3.ExtensionConfigType,
		ResourceNames: []string{FilterName}, VersionInfo: version, ResponseNonce: nonce, ErrorDetail: nack})
	if err != nil {
		e.t.Fatal(err)
	}
}

// recv waits for the next configuration and returns it, decoded as the
// filter would read it.
func (e *envoy) recv() (*discoveryv3.DiscoveryResponse, *pluginconfig.Settings) {
	e.t.Helper()
	resp, err := e.stream.Recv()
	if err != nil {
		e.t.Fatal(err)
	}
	if len(resp.Resources) != 1 {
		e.t.Fatalf("%d resources", len(resp.Resources))
	}
	ext := &corev3.TypedExtensionConfig{}
	if err := resp.Resources[0].UnmarshalTo(ext); err != nil {
		e.t.Fatal(err)
	}
	w := &wasmfilterv3.Wasm{}
	if err := ext.GetTypedConfig().UnmarshalTo(w); err != nil {
		e.t.Fatal(err)
	}
	if err := w.ValidateAll(); err != nil {
		e.t.Fatal(err)
	}
	sv := &wrapperspb.StringValue{}
	if err := w.GetConfig().GetConfiguration().UnmarshalTo(sv); err != nil {
		e.t.Fatal(err)
	}
	s, err := pluginconfig.Parse([]byte(sv.Value), "")
	if err != nil {
		e.t.Fatalf("the filter would refuse what xDS sent: %v", err)
	}
	return resp, s
}

func TestADSServesTheModelPerGroup(t *testing.T) {
	srv := startServer(t, 0)
	a, shaA := model(t, 1)
	b, shaB := model(t, 2)

	// An Envoy that connects before any model waits, then gets the first.
	early := dial(t, srv.Addr, node("reviews-1", "reviews", "shop"))
	if err := srv.Publish(a); err != nil {
		t.Fatal(err)
	}
	resp, s := early.recv()
	if resp.VersionInfo != shaA || s.Model.SHA256() != sectionSHA(t, a, "reviews.shop") || s.Workload != "reviews.shop" || s.Mode != pluginconfig.ModeMonitor {
		t.Fatalf("first config: version %s, settings %+v", resp.VersionInfo, s)
	}
	early.send(resp.VersionInfo, resp.Nonce, nil) // ACK

	// Another group connects after: it gets its own workload, same model.
	late := dial(t, srv.Addr, node("ratings-1", "ratings", "shop"))
	resp2, s2 := late.recv()
	if resp2.VersionInfo != shaA || s2.Workload != "ratings.shop" {
		t.Errorf("late group: %s %s", resp2.VersionInfo, s2.Workload)
	}
	late.send(resp2.VersionInfo, resp2.Nonce, nil)

	// A new model reaches every group.
	if err := srv.Publish(b); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*envoy{early, late} {
		r, s := e.recv()
		if r.VersionInfo != shaB || s.Model.SHA256() != sectionSHA(t, b, s.Workload) {
			t.Errorf("%s: version %s after publishing %s", e.node.Id, r.VersionInfo, shaB)
		}
		// The early Envoy refuses it: recorded, not retried.
		if e == early {
			e.send(shaA, r.Nonce, &status.Status{Code: 3, Message: "wasm: failed to load"})
		} else {
			e.send(r.VersionInfo, r.Nonce, nil)
		}
	}
	select {
	case <-srv.NACKed():
	case <-time.After(5 * time.Second):
		t.Fatal("the NACK was not recorded")
	}
	nacks := srv.NACKs()
	if len(nacks) != 1 || nacks[0].Group != "reviews.shop" || nacks[0].Error != "wasm: failed to load" {
		t.Errorf("NACKs %+v", nacks)
	}
	if srv.Version() != shaB {
		t.Errorf("version %s", srv.Version())
	}
	if err := srv.Publish([]byte("not a model")); err == nil {
		t.Error("an invalid model was published")
	}
}

func TestGroup(t *testing.T) {
	if g := Group(node("x", "reviews", "shop")); g != "reviews.shop" {
		t.Errorf("group %q", g)
	}
	if g := Group(&corev3.Node{Id: "sidecar~1", Cluster: "reviews"}); g != "reviews" {
		t.Errorf("group %q", g)
	}
	if g := Group(&corev3.Node{Id: "n"}); g != "n" {
		t.Errorf("group %q", g)
	}
}

// TestCanary: a canary reaches only its share of a group's nodes, a
// rollback returns them to the stable model, a promotion reaches all.
func TestCanary(t *testing.T) {
	srv := startServer(t, 0.3)
	a, shaA := model(t, 1)
	b, shaB := model(t, 2)
	c, shaC := model(t, 3)
	if err := srv.PublishCanary(b); err == nil {
		t.Error("a canary without a stable model was accepted")
	}
	if err := srv.Publish(a); err != nil {
		t.Fatal(err)
	}
	var envoys []*envoy
	var canaries, stables []*envoy
	for i := 0; i < 20; i++ {
		e := dial(t, srv.Addr, node(fmt.Sprintf("reviews-%d", i), "reviews", "shop"))
		r, _ := e.recv()
		if r.VersionInfo != shaA {
			t.Fatalf("initial version %s", r.VersionInfo)
		}
		e.send(r.VersionInfo, r.Nonce, nil)
		envoys = append(envoys, e)
		if InCanary(e.node.Id, 0.3) {
			canaries = append(canaries, e)
		} else {
			stables = append(stables, e)
		}
	}
	if len(canaries) == 0 || len(stables) == 0 {
		t.Fatalf("%d canaries, %d stable: the hash does not split 20 nodes", len(canaries), len(stables))
	}
	ackAll := func(es []*envoy, want string) {
		t.Helper()
		for _, e := range es {
			r, _ := e.recv()
			if r.VersionInfo != want {
				t.Fatalf("%s got %s, want %s", e.node.Id, r.VersionInfo, want)
			}
			e.send(r.VersionInfo, r.Nonce, nil)
		}
	}
	if err := srv.PublishCanary(b); err != nil {
		t.Fatal(err)
	}
	ackAll(canaries, shaB)
	// The others were not sent anything: their snapshot is still the stable one.
	if snap, err := srv.cache.GetSnapshot(cacheKey("reviews.shop", false)); err != nil || snap.GetVersion(resourcev3.ExtensionConfigType) != shaA {
		t.Errorf("stable nodes' snapshot changed: %v", err)
	}
	if err := srv.Rollback(); err != nil {
		t.Fatal(err)
	}
	ackAll(canaries, shaA)
	if err := srv.PublishCanary(c); err != nil {
		t.Fatal(err)
	}
	ackAll(canaries, shaC)
	if srv.CanaryVersion() != shaC {
		t.Errorf("canary version %s", srv.CanaryVersion())
	}
	if err := srv.Promote(); err != nil {
		t.Fatal(err)
	}
	ackAll(stables, shaC)
	if srv.Version() != shaC || srv.CanaryVersion() != "" {
		t.Errorf("after promotion: stable %s canary %s", srv.Version(), srv.CanaryVersion())
	}
	_ = envoys
}

// TestApply makes what is served follow a desired state, publishing only
// what differs; a state without a stable model changes nothing.
func TestApply(t *testing.T) {
	srv := startServer(t, 0.5)
	a, shaA := model(t, 1)
	b, shaB := model(t, 2)
	for _, step := range []struct {
		stable, canary   []byte
		version, canVers string
	}{
		{nil, nil, "", ""},
		{a, nil, shaA, ""},
		{a, b, shaA, shaB},
		{a, b, shaA, shaB},
		{a, nil, shaA, ""},
		{b, nil, shaB, ""},
		{nil, a, shaB, ""},
	} {
		if err := srv.Apply(step.stable, step.canary); err != nil {
			t.Fatal(err)
		}
		if srv.Version() != step.version || srv.CanaryVersion() != step.canVers {
			t.Fatalf("serving %.8s (canary %.8s), want %.8s (canary %.8s)", srv.Version(), srv.CanaryVersion(), step.version, step.canVers)
		}
	}
	if err := srv.Apply([]byte("not a model"), nil); err == nil {
		t.Error("an invalid model was applied")
	}
}
