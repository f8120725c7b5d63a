package xds

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshward/meshward/control-plane/decide"
	"github.com/meshward/meshward/control-plane/enforce"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

// TestRBACOverADS: a quarantine reaches the target's sidecars over ADS, as
// a real gRPC client sees it — shadow rules while a dry run, rules once
// promoted, nothing after release — and other groups never see it.
func TestRBACOverADS(t *testing.T) {
	srv, err := New(Config{WasmURI: "/etc/meshward/meshward.wasm", Base: pluginconfig.Config{Mode: pluginconfig.ModeMonitor}, RBAC: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	// Neither group has a section: both are served the fallback.
	r, secs := release(t, 1, "other.shop")
	if err := srv.Publish(context.Background(), r, secs); err != nil {
		t.Fatal(err)
	}
	sha := r.Sections[models.GlobalWorkload]
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	type sidecar struct {
		st   discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
		node *corev3.Node
	}
	open := func(id, workload string) *sidecar {
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return &sidecar{st, node(id, workload, "shop")}
	}
	send := func(s *sidecar, version, nonce string) {
		if err := s.st.Send(&discoveryv3.DiscoveryRequest{Node: s.node, TypeUrl: resourcev3.ExtensionConfigType,
			ResourceNames: []string{FilterName, RBACName}, VersionInfo: version, ResponseNonce: nonce}); err != nil {
			t.Fatal(err)
		}
	}
	// recv returns the RBAC filter of the next response, ACKing it.
	recv := func(s *sidecar) *rbacfilterv3.RBAC {
		t.Helper()
		resp, err := s.st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var f *rbacfilterv3.RBAC
		for _, res := range resp.Resources {
			ext := &corev3.TypedExtensionConfig{}
			if err := res.UnmarshalTo(ext); err != nil {
				t.Fatal(err)
			}
			if ext.Name == RBACName {
				f = &rbacfilterv3.RBAC{}
				if err := ext.TypedConfig.UnmarshalTo(f); err != nil {
					t.Fatal(err)
				}
				if err := f.ValidateAll(); err != nil {
					t.Fatalf("Envoy would refuse the RBAC: %v", err)
				}
			}
		}
		if len(resp.Resources) != 2 || f == nil || len(resp.VersionInfo) < len(sha) || resp.VersionInfo[:len(sha)] != sha {
			t.Fatalf("response: version %s, %d resources, rbac %v", resp.VersionInfo, len(resp.Resources), f)
		}
		send(s, resp.VersionInfo, resp.Nonce)
		return f
	}
	reviews, ratings := open("reviews-1", "reviews"), open("ratings-1", "ratings")
	send(reviews, "", "")
	send(ratings, "", "")
	if f := recv(reviews); f.Rules != nil || f.ShadowRules != nil {
		t.Fatalf("rules before any quarantine: %v", f)
	}
	if f := recv(ratings); f.Rules != nil || f.ShadowRules != nil {
		t.Fatalf("rules before any quarantine: %v", f)
	}

	rules := decide.DefaultRules()
	rules.Enforce, rules.PromoteAfter = true, 2*time.Second
	sink := enforce.NewRBAC(srv, rules, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	principal := "spiffe://cluster.local/ns/shop/sa/web"
	d := decide.Decision{ID: "web-1", Principal: principal, Mode: decide.DryRun, Created: t0, Expires: t0.Add(time.Hour),
		Deny: []decide.Target{{Workload: "reviews.shop", Name: "reviews", Namespace: "shop"}}}
	d.TrustDomain, d.Namespace, d.ServiceAccount = decide.ParseSPIFFE(principal)
	if err := sink.Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	f := recv(reviews)
	if f.Rules != nil || f.ShadowRules == nil || f.ShadowRules.Policies["meshward-quarantine-web-1"].GetPrincipals()[0].GetAuthenticated().GetPrincipalName().GetExact() != principal {
		t.Fatalf("dry run: want shadow rules denying %s, got %v", principal, f)
	}
	if err := sink.Tick(context.Background(), t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if f := recv(reviews); f.ShadowRules != nil || f.Rules == nil || len(f.Rules.Policies) != 1 {
		t.Fatalf("promoted: want enforced rules only, got %v", f)
	}
	if err := sink.Release(context.Background(), "web-1"); err != nil {
		t.Fatal(err)
	}
	if f := recv(reviews); f.Rules != nil || f.ShadowRules != nil {
		t.Fatalf("released: rules remain: %v", f)
	}
	// ratings was never a target: its rules are still none.
	ext, _, err := srv.RBACExtension("ratings.shop")
	rf := &rbacfilterv3.RBAC{}
	if err != nil || ext.TypedConfig.UnmarshalTo(rf) != nil || rf.Rules != nil || rf.ShadowRules != nil {
		t.Errorf("ratings' rules: %v %v", rf, err)
	}
}
