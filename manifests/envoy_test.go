package manifests

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/control-plane/xds"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

// validatable is every generated Envoy message.
type validatable interface {
	proto.Message
	ValidateAll() error
}

// yamlToJSON turns one YAML document into JSON.
func yamlToJSON(doc []byte) ([]byte, error) {
	var v any
	if err := yaml.Unmarshal(doc, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// decode reads JSON into an Envoy message strictly (an unknown field or an
// unregistered Any type fails) and validates every message in it.
func decode(what string, js []byte, m validatable) error {
	if err := protojson.Unmarshal(js, m); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := m.ValidateAll(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// checkFilters checks the HTTP filters that meshward feeds by ECDS: their
// names are the resource names the control plane serves, their type URLs
// the types it serves, and their default configurations are valid (for
// the Wasm filter, a plugin configuration the filter accepts).
func checkFilters(filters []*hcmv3.HttpFilter) error {
	want := map[string]string{
		xds.FilterName: "type.googleapis.com/" + string((&wasmfilterv3.Wasm{}).ProtoReflect().Descriptor().FullName()),
		xds.RBACName:   "type.googleapis.com/" + string((&rbacfilterv3.RBAC{}).ProtoReflect().Descriptor().FullName()),
	}
	for _, f := range filters {
		cd := f.GetConfigDiscovery()
		if cd == nil {
			continue
		}
		typeURL, ok := want[f.GetName()]
		if !ok {
			return fmt.Errorf("filter %q is discovered by ECDS, but meshward serves no resource of that name (want %s or %s)", f.GetName(), xds.FilterName, xds.RBACName)
		}
		if len(cd.GetTypeUrls()) != 1 || cd.GetTypeUrls()[0] != typeURL {
			return fmt.Errorf("filter %q: type_urls %v, want [%s]", f.GetName(), cd.GetTypeUrls(), typeURL)
		}
		if dc := cd.GetDefaultConfig(); dc != nil {
			if dc.GetTypeUrl() != typeURL {
				return fmt.Errorf("filter %q: default_config is a %s, want %s", f.GetName(), dc.GetTypeUrl(), typeURL)
			}
			if f.GetName() == xds.FilterName {
				w := &wasmfilterv3.Wasm{}
				if err := dc.UnmarshalTo(w); err != nil {
					return err
				}
				sv := &wrapperspb.StringValue{}
				if err := w.GetConfig().GetConfiguration().UnmarshalTo(sv); err != nil {
					return fmt.Errorf("filter %q: the default configuration is not a StringValue: %w", f.GetName(), err)
				}
				if _, err := pluginconfig.Parse([]byte(sv.Value), "reviews.shop"); err != nil {
					return fmt.Errorf("filter %q: the filter would refuse its default configuration: %w", f.GetName(), err)
				}
			}
		}
	}
	return nil
}

// checkBootstrap decodes and checks manifests/envoy's bootstrap.
func checkBootstrap(doc []byte) error {
	js, err := yamlToJSON(doc)
	if err != nil {
		return err
	}
	b := &bootstrapv3.Bootstrap{}
	if err := decode("bootstrap", js, b); err != nil {
		return err
	}
	clusters := map[string]bool{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = true
	}
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads.GetApiType() != corev3.ApiConfigSource_GRPC || !clusters[ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()] {
		return fmt.Errorf("ads_config must be gRPC to a defined cluster: %v", ads)
	}
	var found []string
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, nf := range fc.GetFilters() {
				h := &hcmv3.HttpConnectionManager{}
				if err := nf.GetTypedConfig().UnmarshalTo(h); err != nil {
					return err
				}
				if err := checkFilters(h.GetHttpFilters()); err != nil {
					return err
				}
				for _, f := range h.GetHttpFilters() {
					if f.GetConfigDiscovery() != nil {
						if f.GetConfigDiscovery().GetConfigSource().GetAds() == nil {
							return fmt.Errorf("filter %q must be discovered over ADS (meshward's)", f.GetName())
						}
						found = append(found, f.GetName())
					}
				}
			}
		}
	}
	if strings.Join(found, ",") != xds.RBACName+","+xds.FilterName {
		return fmt.Errorf("ECDS filters %v, want [%s %s] in that order", found, xds.RBACName, xds.FilterName)
	}
	return nil
}

// envoyFilter is the part of an Istio EnvoyFilter the checks read.
type envoyFilter struct {
	Spec struct {
		ConfigPatches []struct {
			ApplyTo string `yaml:"applyTo"`
			Patch   struct {
				Operation string `yaml:"operation"`
				Value     any    `yaml:"value"`
			} `yaml:"patch"`
		} `yaml:"configPatches"`
	} `yaml:"spec"`
}

// checkEnvoyFilter decodes every patch value of an EnvoyFilter into the
// Envoy message it patches, and checks the clusters it names exist.
func checkEnvoyFilter(doc []byte) (clusters map[string]*clusterv3.Cluster, err error) {
	var ef envoyFilter
	if err := yaml.Unmarshal(doc, &ef); err != nil {
		return nil, err
	}
	clusters = map[string]*clusterv3.Cluster{}
	var filters []*hcmv3.HttpFilter
	for i, p := range ef.Spec.ConfigPatches {
		js, err := json.Marshal(p.Patch.Value)
		if err != nil {
			return nil, err
		}
		what := fmt.Sprintf("configPatches[%d] (%s)", i, p.ApplyTo)
		switch p.ApplyTo {
		case "CLUSTER":
			c := &clusterv3.Cluster{}
			if err := decode(what, js, c); err != nil {
				return nil, err
			}
			clusters[c.GetName()] = c
		case "HTTP_FILTER":
			f := &hcmv3.HttpFilter{}
			if err := decode(what, js, f); err != nil {
				return nil, err
			}
			filters = append(filters, f)
		case "LISTENER":
			if err := decode(what, js, &listenerv3.Listener{}); err != nil {
				return nil, err
			}
		case "NETWORK_FILTER":
			// A MERGE patch is part of a filter: decoded strictly (field
			// names, enums, types), not validated whole.
			if err := protojson.Unmarshal(js, &listenerv3.Filter{}); err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
		default:
			return nil, fmt.Errorf("%s: no check for applyTo %s", what, p.ApplyTo)
		}
	}
	if err := checkFilters(filters); err != nil {
		return nil, err
	}
	for _, f := range filters {
		src := f.GetConfigDiscovery().GetConfigSource().GetApiConfigSource()
		if src == nil {
			return nil, fmt.Errorf("filter %q: an Istio sidecar's ADS is istiod's; meshward must be named by api_config_source", f.GetName())
		}
		for _, g := range src.GetGrpcServices() {
			if clusters[g.GetEnvoyGrpc().GetClusterName()] == nil {
				return nil, fmt.Errorf("filter %q: cluster %q is not added by the EnvoyFilter", f.GetName(), g.GetEnvoyGrpc().GetClusterName())
			}
		}
	}
	return clusters, nil
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEnvoyBootstrap(t *testing.T) {
	doc := read(t, "envoy/envoy.yaml")
	if err := checkBootstrap(doc); err != nil {
		t.Fatal(err)
	}
	// Envoy reaches xDS and the collector over mTLS, with the workload's
	// certificate, checking the control plane's identity.
	js, err := yamlToJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := decode("envoy.yaml", js, b); err != nil {
		t.Fatal(err)
	}
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	for _, name := range []string{"meshward-xds", "meshward-collector"} {
		if err := checkMTLS(clusters[name]); err != nil {
			t.Errorf("cluster %s: %v", name, err)
		}
	}
	if id := b.GetNode().GetId(); !strings.HasPrefix(id, "spiffe://cluster.local/ns/shop/sa/reviews/") {
		t.Errorf("node id %q does not name the workload's identity", id)
	}
}

// checkMTLS says whether a cluster presents a client certificate and checks
// the control plane's SPIFFE ID.
func checkMTLS(c *clusterv3.Cluster) error {
	if c == nil {
		return fmt.Errorf("missing")
	}
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
		return fmt.Errorf("no TLS transport socket: %v", err)
	}
	common := ctx.GetCommonTlsContext()
	if len(common.GetTlsCertificateSdsSecretConfigs()) != 1 {
		return fmt.Errorf("presents no certificate from SDS")
	}
	sans := common.GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	if len(sans) != 1 || sans[0].GetMatcher().GetExact() != "spiffe://cluster.local/ns/meshward-system/sa/meshward" {
		return fmt.Errorf("does not check the control plane's identity: %v", sans)
	}
	if common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig() == nil {
		return fmt.Errorf("trusts no CA")
	}
	return nil
}

// The control plane's sidecar sanitizes x-forwarded-client-cert (the patch
// decodes as Envoy's own HttpConnectionManager), and the ECDS clusters of
// the watched namespace's sidecars reach the control plane over Istio's
// mTLS.
func TestMeshIdentities(t *testing.T) {
	var doc []byte
	for _, d := range strings.Split(string(read(t, "istio/controlplane/mesh.yaml")), "\n---\n") {
		if strings.Contains(d, "kind: EnvoyFilter") {
			doc = []byte(d)
		}
	}
	if doc == nil {
		t.Fatal("mesh.yaml has no EnvoyFilter")
	}
	if _, err := checkEnvoyFilter(doc); err != nil {
		t.Fatal(err)
	}
	var ef envoyFilter
	if err := yaml.Unmarshal(doc, &ef); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(ef.Spec.ConfigPatches[0].Patch.Value)
	f := &listenerv3.Filter{}
	if err := protojson.Unmarshal(js, f); err != nil {
		t.Fatal(err)
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	if hcm.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_SANITIZE_SET || !hcm.GetSetCurrentClientCertDetails().GetUri() {
		t.Errorf("the control plane's sidecar does not replace x-forwarded-client-cert with the URI it verified: %v", hcm)
	}
	clusters, err := checkEnvoyFilter(read(t, "istio-ecds/envoyfilter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"meshward-xds", "meshward-wasm"} {
		if err := checkMTLS(clusters[name]); err != nil {
			t.Errorf("istio-ecds cluster %s: %v", name, err)
		}
	}
}

func TestEnvoyFilter(t *testing.T) {
	clusters, err := checkEnvoyFilter(read(t, "istio-ecds/envoyfilter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The module is fetched through the cluster the control plane's ECDS
	// resources name for a remote module.
	srv, err := xds.New(xds.Config{WasmURI: "http://meshward.meshward-system.svc.cluster.local:9091/wasm/meshward.wasm", WasmSHA256: strings.Repeat("0", 64)})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := srv.Extension("reviews.default", testModel(t))
	if err != nil {
		t.Fatal(err)
	}
	w := &wasmfilterv3.Wasm{}
	if err := ext.GetTypedConfig().UnmarshalTo(w); err != nil {
		t.Fatal(err)
	}
	remote := w.GetConfig().GetVmConfig().GetCode().GetRemote().GetHttpUri()
	if clusters[remote.GetCluster()] == nil {
		t.Fatalf("the control plane fetches the module through cluster %q, which the EnvoyFilter does not add (it adds %v)", remote.GetCluster(), keys(clusters))
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A broken copy fails: a typo in a type URL, in a field name, and a filter
// name the control plane does not serve.
func TestBrokenEnvoyConfigsFail(t *testing.T) {
	boot := string(read(t, "envoy/envoy.yaml"))
	ef := string(read(t, "istio-ecds/envoyfilter.yaml"))
	for _, c := range []struct {
		name, doc, old, new, want string
		envoyFilter               bool
	}{
		{"type URL typo", boot, "http.router.v3.Router", "http.router.v3.Routr", "Routr", false},
		{"field typo", boot, "connect_timeout: 5s", "connect_timout: 5s", "connect_timout", false},
		{"unserved filter name", boot, "- name: meshward-rbac", "- name: meshward-authz", "meshward-authz", false},
		{"invalid value", boot, "port_value: 18000", "port_value: 700000", "PortValue", false},
		{"EnvoyFilter type URL typo", ef, "wasm.v3.Wasm\n              config:", "wasm.v3.Wsm\n              config:", "Wsm", true},
		{"EnvoyFilter field typo", ef, "initial_fetch_timeout", "initial_fetch_timout", "initial_fetch_timout", true},
		{"EnvoyFilter plugin config the filter refuses", ef, `'{"mode":"learn"}'`, `'{"mode":"lean"}'`, "lean", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			broken := strings.Replace(c.doc, c.old, c.new, 1)
			if broken == c.doc {
				t.Fatalf("%q not found: the test no longer breaks anything", c.old)
			}
			var err error
			if c.envoyFilter {
				_, err = checkEnvoyFilter([]byte(broken))
			} else {
				err = checkBootstrap([]byte(broken))
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming %q", err, c.want)
			}
		})
	}
}

// testModel is the section of reviews.default of a small real model (the
// control plane refuses to serve anything else).
func testModel(t *testing.T) []byte {
	cfg := models.DefaultTrainConfig()
	cfg.Seed, cfg.Now = 1, time.Unix(0, 0)
	tr, err := models.NewTrainer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/r/%d", i), Source: "productpage.default", Destination: "reviews.default"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	b, err := models.EncodeSection(m, "reviews.default")
	if err != nil {
		t.Fatal(err)
	}
	return b
}
