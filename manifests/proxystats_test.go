package manifests

import (
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// proxyConfig decodes a ProxyConfig written as YAML, strictly, into Istio's
// own message.
func proxyConfig(t *testing.T, what string, v any) *meshv1alpha1.ProxyConfig {
	t.Helper()
	doc, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yamlToJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	pc := &meshv1alpha1.ProxyConfig{}
	if err := protojson.Unmarshal(js, pc); err != nil {
		t.Fatalf("%s is not an Istio ProxyConfig: %v", what, err)
	}
	return pc
}

// Both ways of including the filter's metrics decode into Istio's
// ProxyConfig, and their patterns take in every metric the filter defines,
// whether or not Envoy prefixes Wasm stats with its custom namespace.
func TestProxyStatsMatcher(t *testing.T) {
	var values struct {
		MeshConfig struct {
			DefaultConfig map[string]any `yaml:"defaultConfig"`
		} `yaml:"meshConfig"`
	}
	if err := yaml.Unmarshal(read(t, "istio/proxy-stats/meshconfig-values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	var patch struct {
		Spec struct {
			Template struct {
				Metadata struct {
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"metadata"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(read(t, "istio/proxy-stats/workload-annotation-patch.yaml"), &patch); err != nil {
		t.Fatal(err)
	}
	var annotation map[string]any
	if err := yaml.Unmarshal([]byte(patch.Spec.Template.Metadata.Annotations["proxy.istio.io/config"]), &annotation); err != nil {
		t.Fatal(err)
	}
	for what, v := range map[string]any{"meshconfig-values.yaml": values.MeshConfig.DefaultConfig, "the proxy.istio.io/config annotation": annotation} {
		pc := proxyConfig(t, what, v)
		var res []*regexp.Regexp
		for _, r := range pc.GetProxyStatsMatcher().GetInclusionRegexps() {
			res = append(res, regexp.MustCompile("^(?:"+r+")$"))
		}
		for m := range filterMetrics(t) {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				m = strings.TrimSuffix(m, s)
			}
			for _, name := range []string{m, "wasmcustom." + m} {
				ok := false
				for _, re := range res {
					ok = ok || re.MatchString(name)
				}
				if !ok {
					t.Errorf("%s: stat %s is not included", what, name)
				}
			}
		}
	}
}
