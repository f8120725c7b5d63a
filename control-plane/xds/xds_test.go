package xds

import (
	"context"
	"testing"

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
)

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
