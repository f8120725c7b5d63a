package xds

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	extensionv3 "github.com/envoyproxy/go-control-plane/envoy/service/extension/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/devca"
)

const reviews = "spiffe://cluster.local/ns/shop/sa/reviews"

// recvWithin waits for one update; a refused client gets an error and no
// update.
func recvWithin(c *Client) (*Update, error) {
	type got struct {
		u   *Update
		err error
	}
	ch := make(chan got, 1)
	go func() { u, err := c.Recv(); ch <- got{u, err} }()
	select {
	case g := <-ch:
		return g.u, g.err
	case <-time.After(10 * time.Second):
		return nil, context.DeadlineExceeded
	}
}

// TestADSOverMTLS: ADS serves over TLS with client certificates. A client
// without a certificate, or with one another CA issued, gets nothing; a
// client whose certificate names another workload than its node, or whose
// node id does not name it, gets nothing; the workload's own Envoy gets its
// configuration, which carries no credential.
func TestADSOverMTLS(t *testing.T) {
	ca, err := devca.New("mesh")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Server("", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{WasmURI: "/etc/meshward/meshward.wasm",
		Base:     pluginconfig.Config{Mode: pluginconfig.ModeMonitor, CollectorCluster: "meshward-collector"},
		TLS:      &tls.Config{Certificates: []tls.Certificate{leaf.Cert}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert},
		Identity: IdentityTLS, Binding: identity.Binding{TrustDomain: "cluster.local"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	r1, secs1 := release(t, 1, "reviews.shop")
	if err := srv.Publish(context.Background(), r1, secs1); err != nil {
		t.Fatal(err)
	}
	clientTLS := func(id string) *tls.Config {
		if id == "" {
			return ca.ClientTLS(nil)
		}
		l, err := ca.Client(id)
		if err != nil {
			t.Fatal(err)
		}
		return ca.ClientTLS(l)
	}
	other, _ := devca.New("another mesh")
	forged, _ := other.Client(reviews)
	forgedTLS := ca.ClientTLS(nil)
	forgedTLS.Certificates = []tls.Certificate{forged.Cert}

	for _, c := range []struct {
		name string
		tc   *tls.Config
		node *corev3.Node
	}{
		{"no client certificate", clientTLS(""), Node(reviews+"/reviews-1", "reviews", "shop")},
		{"a certificate of another CA", forgedTLS, Node(reviews+"/reviews-1", "reviews", "shop")},
		{"another workload's node", clientTLS("spiffe://cluster.local/ns/shop/sa/ratings"), Node("spiffe://cluster.local/ns/shop/sa/ratings/r-1", "reviews", "shop")},
		{"another namespace's node", clientTLS(reviews), Node(reviews+"/reviews-1", "reviews", "other")},
		{"a node id naming someone else", clientTLS(reviews), Node("spiffe://cluster.local/ns/shop/sa/ratings/r-1", "reviews", "shop")},
		{"an Istio node id of another namespace", clientTLS(reviews), Node("sidecar~10.0.0.1~reviews-1.other~other.svc.cluster.local", "reviews", "shop")},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, err := DialTLS(srv.Addr, c.node, c.tc)
			if err == nil {
				defer cl.Close()
				var u *Update
				u, err = recvWithin(cl)
				if u != nil {
					t.Fatalf("got configuration %s", u.Version)
				}
			}
			if err == nil || err == context.DeadlineExceeded {
				t.Fatalf("no refusal: %v", err)
			}
		})
	}
	if srv.Refused() < 4 {
		t.Errorf("refused %d clients for their identity, want at least the 4 with valid certificates", srv.Refused())
	}
	// The ECDS unary fetch is checked too.
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS("spiffe://cluster.local/ns/shop/sa/ratings"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := extensionv3.NewExtensionConfigDiscoveryServiceClient(conn).FetchExtensionConfigs(ctx, &discoveryv3.DiscoveryRequest{
		Node: Node("spiffe://cluster.local/ns/shop/sa/ratings/r-1", "reviews", "shop"), TypeUrl: resourcev3.ExtensionConfigType, ResourceNames: []string{FilterName}}); err == nil {
		t.Error("a fetch of another workload's configuration succeeded")
	}

	for _, id := range []string{reviews + "/reviews-1", reviews, "sidecar~10.0.0.1~reviews-1.shop~shop.svc.cluster.local"} {
		cl, err := DialTLS(srv.Addr, Node(id, "reviews", "shop"), clientTLS(reviews))
		if err != nil {
			t.Fatal(err)
		}
		u, err := recvWithin(cl)
		cl.Close()
		if err != nil || u == nil {
			t.Fatalf("the workload's own Envoy (node %s): %v", id, err)
		}
		s, err := pluginconfig.Parse(u.PluginConfig, "")
		if err != nil || s.Workload != "reviews.shop" || s.Model == nil {
			t.Fatalf("its configuration: %+v %v", s, err)
		}
		// Nothing served is a credential.
		all, _ := protojson.Marshal(u.Wasm)
		for _, secret := range []string{"token", "authorization", "password", "bearer"} {
			if strings.Contains(strings.ToLower(string(u.PluginConfig)+string(all)), secret) {
				t.Errorf("the served configuration mentions %q: %s", secret, u.PluginConfig[:min(200, len(u.PluginConfig))])
			}
		}
	}
	// A base configuration carrying a credential is refused outright.
	if _, err := New(Config{WasmURI: "/m.wasm", Base: pluginconfig.Config{CollectorToken: strings.Repeat("t", 32)}}); err == nil {
		t.Error("xDS took a base configuration with a collector token")
	}
}

// TestADSBehindTheSidecar: with -xds-identity=xfcc the identity is the
// x-forwarded-client-cert the control plane's sidecar sets on the stream.
func TestADSBehindTheSidecar(t *testing.T) {
	srv, err := New(Config{WasmURI: "/etc/meshward/meshward.wasm", Identity: IdentityXFCC})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	r1, secs1 := release(t, 1, "reviews.shop")
	if err := srv.Publish(context.Background(), r1, secs1); err != nil {
		t.Fatal(err)
	}
	stream := func(xfcc string) error {
		conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if xfcc != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-forwarded-client-cert", xfcc)
		}
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: Node(reviews+"/r-1", "reviews", "shop"), TypeUrl: resourcev3.ExtensionConfigType, ResourceNames: []string{FilterName}}); err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	if err := stream("By=spiffe://cluster.local/ns/meshward-system/sa/meshward;URI=" + reviews); err != nil {
		t.Errorf("the sidecar's element naming the workload: %v", err)
	}
	for name, h := range map[string]string{
		"no header":                 "",
		"another workload":          "URI=spiffe://cluster.local/ns/shop/sa/ratings",
		"a client's element beside": "URI=" + reviews + ",URI=spiffe://cluster.local/ns/shop/sa/ratings",
	} {
		if err := stream(h); err == nil {
			t.Errorf("%s: served", name)
		}
	}
}
