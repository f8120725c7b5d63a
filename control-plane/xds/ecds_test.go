package xds

import (
	"context"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	extensionv3 "github.com/envoyproxy/go-control-plane/envoy/service/extension/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshward/meshward/filter/pluginconfig"
)

// An Istio sidecar reaches meshward through an EnvoyFilter whose
// config_discovery names a gRPC api_config_source: that is the ECDS
// service, not ADS. It must get the same per-workload configuration.
func TestECDSServiceServesTheModel(t *testing.T) {
	srv := startServer(t, 0)
	r, secs := release(t, 1, "reviews.shop")
	if err := srv.Publish(context.Background(), r, secs); err != nil {
		t.Fatal(err)
	}
	sha := r.Sections["reviews.shop"]
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := extensionv3.NewExtensionConfigDiscoveryServiceClient(conn).StreamExtensionConfigs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := node("reviews-1", "reviews", "shop")
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resourcev3.ExtensionConfigType, ResourceNames: []string{FilterName}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.VersionInfo != sha || len(resp.Resources) != 1 {
		t.Fatalf("version %q, %d resources; want %s and 1", resp.VersionInfo, len(resp.Resources), sha)
	}
	ext := &corev3.TypedExtensionConfig{}
	if err := resp.Resources[0].UnmarshalTo(ext); err != nil {
		t.Fatal(err)
	}
	if ext.Name != FilterName {
		t.Fatalf("resource %q, want %q", ext.Name, FilterName)
	}
}

// With LearnFirst, an Envoy that connects before any model gets the filter
// in learn mode (shipping to the collector), then the model once published.
func TestLearnFirst(t *testing.T) {
	srv, err := New(Config{WasmURI: "/etc/meshward/meshward.wasm", LearnFirst: true, Base: pluginconfig.Config{
		Mode: pluginconfig.ModeMonitor, CollectorCluster: "meshward-collector"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	e := dial(t, srv.Addr, node("reviews-1", "reviews", "shop"))
	resp, s := e.recv()
	if resp.VersionInfo != LearnVersion || s.Mode != pluginconfig.ModeLearn || s.Model != nil || s.CollectorCluster != "meshward-collector" || s.Workload != "reviews.shop" {
		t.Fatalf("before any model: version %q, settings %+v", resp.VersionInfo, s)
	}
	e.send(resp.VersionInfo, resp.Nonce, nil)
	r, secs := release(t, 1, "reviews.shop")
	if err := srv.Publish(context.Background(), r, secs); err != nil {
		t.Fatal(err)
	}
	resp, s = e.recv()
	if resp.VersionInfo != r.Sections["reviews.shop"] || s.Mode != pluginconfig.ModeMonitor || s.Model == nil {
		t.Fatalf("after publishing: version %q, mode %s", resp.VersionInfo, s.Mode)
	}
}
