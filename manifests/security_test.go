package manifests

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// renderedObject is the part of a rendered renderedObject these checks read.
type renderedObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name, Namespace string
	} `yaml:"metadata"`
	Rules []struct {
		APIGroups       []string `yaml:"apiGroups"`
		Resources       []string `yaml:"resources"`
		ResourceNames   []string `yaml:"resourceNames"`
		Verbs           []string `yaml:"verbs"`
		NonResourceURLs []string `yaml:"nonResourceURLs"`
	} `yaml:"rules"`
	Spec map[string]any `yaml:"spec"`
	Data map[string]any `yaml:"data"`
}

// rendered renders a kustomization as kubectl does.
func rendered(t *testing.T, k string) []renderedObject {
	env := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := env.RunKubectl(ctx, "kustomize", filepath.Join(workdir(t), k))
	if err != nil {
		t.Fatal(err)
	}
	var objs []renderedObject
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o renderedObject
		if err := dec.Decode(&o); err != nil {
			break
		}
		objs = append(objs, o)
	}
	return objs
}

// What makes the trust model true in a cluster ships with every install:
// STRICT mTLS for meshward-system, AuthorizationPolicies for the control
// plane and Redis, a NetworkPolicy admitting only the control plane to
// Redis, Redis' password generated (never a literal), the WasmPlugin
// updated by name only, the admin API's ClusterRoles, the control plane
// taking identities from its sanitizing sidecar.
func TestTheTrustModelShips(t *testing.T) {
	objs := rendered(t, "istio/base")
	find := func(kind, name string) *renderedObject {
		for i := range objs {
			if objs[i].Kind == kind && objs[i].Metadata.Name == name {
				return &objs[i]
			}
		}
		t.Errorf("no %s %s", kind, name)
		return &renderedObject{}
	}
	if pa := find("PeerAuthentication", "default"); pa.Metadata.Namespace != "meshward-system" || pa.Spec["mtls"].(map[string]any)["mode"] != "STRICT" {
		t.Errorf("PeerAuthentication %+v: want STRICT in meshward-system", pa)
	}
	for _, name := range []string{"meshward", "meshward-redis"} {
		if ap := find("AuthorizationPolicy", name); ap.Spec["action"] != "ALLOW" || len(ap.Spec["rules"].([]any)) == 0 {
			t.Errorf("AuthorizationPolicy %s: %+v", name, ap.Spec)
		}
	}
	find("NetworkPolicy", "meshward-redis")
	find("EnvoyFilter", "meshward-xfcc")
	find("Job", "meshward-redis-password")
	for _, name := range []string{"meshward-viewer", "meshward-operator", "meshward-metrics-reader"} {
		find("ClusterRole", name)
	}
	find("ClusterRoleBinding", "meshward-auth-delegator")
	for _, o := range objs {
		if o.Kind == "Secret" {
			t.Errorf("a Secret ships in the manifests (%s): secrets are generated in the cluster", o.Metadata.Name)
		}
		// WasmPlugins are written per workload (meshward-<workload>, owned
		// by label; RBAC cannot limit create to a name prefix), so the
		// grant is namespaced: a Role in the watched namespace, never a
		// ClusterRole.
		for _, r := range o.Rules {
			if slices.Contains(r.Resources, "wasmplugins") && o.Kind != "Role" {
				t.Errorf("%s %s grants wasmplugins %v: only a namespaced Role may", o.Kind, o.Metadata.Name, r.Verbs)
			}
		}
	}
	// The control plane's arguments: identities from its sidecar, Redis
	// with a user and a password file, no token anywhere.
	dep := find("Deployment", "meshward")
	b, _ := yaml.Marshal(dep.Spec)
	spec := string(b)
	for _, want := range []string{"-collector-identity=xfcc", "-xds-identity=xfcc", "-redis-username=meshward", "-redis-password-file=", "-value-key-file=", `sidecar.istio.io/inject: "true"`} {
		if !strings.Contains(spec, want) {
			t.Errorf("the control plane's Deployment lacks %s", want)
		}
	}
	if strings.Contains(spec, "token-file") {
		t.Error("the control plane's Deployment reads a token file")
	}
	redis := find("StatefulSet", "meshward-redis")
	b, _ = yaml.Marshal(redis.Spec)
	if rs := string(b); !strings.Contains(rs, "- default\n") || !strings.Contains(rs, `">$(REDIS_PASSWORD)"`) && !strings.Contains(rs, ">$(REDIS_PASSWORD)") {
		t.Errorf("Redis does not turn its default user off and take the Secret's password:\n%s", rs)
	}
}
