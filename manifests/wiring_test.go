package manifests

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// object is the part of a rendered object the wiring checks read.
type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Spec yaml.Node `yaml:"spec"`
}

// render returns the objects a kustomization renders, by kind.
func render(t *testing.T, dir string) map[string][]object {
	env := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := env.RunKubectl(ctx, "kustomize", dir)
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string][]object{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o object
		if dec.Decode(&o) != nil {
			break
		}
		objs[o.Kind] = append(objs[o.Kind], o)
	}
	return objs
}

func decodeSpec[T any](t *testing.T, o object) T {
	var v T
	if err := o.Spec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

type serviceSpec struct {
	Ports []struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort string `yaml:"targetPort"`
	} `yaml:"ports"`
}

type deploymentSpec struct {
	Template struct {
		Spec struct {
			Containers []struct {
				Args  []string `yaml:"args"`
				Ports []struct {
					Name          string `yaml:"name"`
					ContainerPort int    `yaml:"containerPort"`
				} `yaml:"ports"`
			} `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

// wiring is how the pieces find each other: the Service's ports by name
// and the addresses serve listens on.
type wiring struct {
	host  string         // the Service's cluster DNS name
	ports map[string]int // Service port by name
}

func controlPlaneWiring(t *testing.T, objs map[string][]object) wiring {
	w := wiring{ports: map[string]int{}}
	var svc *object
	for i, s := range objs["Service"] {
		if s.Metadata.Name == "meshward" {
			svc = &objs["Service"][i]
		}
	}
	if svc == nil {
		t.Fatal("no meshward Service")
	}
	w.host = fmt.Sprintf("%s.%s.svc.cluster.local", svc.Metadata.Name, svc.Metadata.Namespace)
	ss := decodeSpec[serviceSpec](t, *svc)
	var dep *object
	for i, d := range objs["Deployment"] {
		if d.Metadata.Name == "meshward" {
			dep = &objs["Deployment"][i]
		}
	}
	ds := decodeSpec[deploymentSpec](t, *dep)
	c := ds.Template.Spec.Containers[0]
	containerPorts := map[string]int{}
	for _, p := range c.Ports {
		containerPorts[p.Name] = p.ContainerPort
	}
	// Each listen flag's port is the container port the Service targets.
	listen := map[string]string{"-collector-addr": "http-collector", "-admin-addr": "http-admin", "-xds-addr": "grpc-xds"}
	for _, a := range c.Args {
		name, val, _ := strings.Cut(a, "=")
		portName, ok := listen[name]
		if !ok {
			continue
		}
		_, port, err := net.SplitHostPort(val)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if n, _ := strconv.Atoi(port); n != containerPorts[portName] {
			t.Errorf("%s listens on %s, but container port %s is %d", name, port, portName, containerPorts[portName])
		}
		delete(listen, name)
	}
	for name := range listen {
		t.Errorf("the Deployment does not set %s (serve's default binds to loopback)", name)
	}
	for _, p := range ss.Ports {
		if _, ok := containerPorts[p.TargetPort]; !ok {
			t.Errorf("Service port %s targets %q, which the container does not name", p.Name, p.TargetPort)
		}
		w.ports[p.Name] = p.Port
	}
	return w
}

// The WasmPlugin's collector cluster is Istio's name for the Service's
// collector port.
func TestWasmPluginReachesTheCollector(t *testing.T) {
	objs := render(t, filepath.Join(workdir(t), "istio/base"))
	w := controlPlaneWiring(t, objs)
	wp := decodeSpec[struct {
		PluginConfig map[string]any `yaml:"pluginConfig"`
	}](t, objs["WasmPlugin"][0])
	want := fmt.Sprintf("outbound|%d||%s", w.ports["http-collector"], w.host)
	if got := wp.PluginConfig["collector_cluster"]; got != want {
		t.Fatalf("collector_cluster %q, want %q (Istio's cluster of the collector Service port)", got, want)
	}
}

// The ECDS variant's clusters, module URL and collector cluster point at the
// Service's ports, and the module URL is where serve -wasm-file serves it.
func TestECDSReachesTheControlPlane(t *testing.T) {
	objs := render(t, filepath.Join(workdir(t), "istio-ecds"))
	w := controlPlaneWiring(t, objs)
	ef := objs["EnvoyFilter"][0]
	doc, err := yaml.Marshal(map[string]any{"spec": &ef.Spec})
	if err != nil {
		t.Fatal(err)
	}
	clusters, err := checkEnvoyFilter(doc)
	if err != nil {
		t.Fatal(err)
	}
	for name, port := range map[string]string{"meshward-xds": "grpc-xds", "meshward-wasm": "http-admin"} {
		c := clusters[name]
		sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if sa.GetAddress() != w.host || int(sa.GetPortValue()) != w.ports[port] {
			t.Errorf("cluster %s goes to %s:%d, want %s:%d (Service port %s)", name, sa.GetAddress(), sa.GetPortValue(), w.host, w.ports[port], port)
		}
	}
	ds := decodeSpec[deploymentSpec](t, objs["Deployment"][0])
	args := map[string]string{}
	for _, a := range ds.Template.Spec.Containers[0].Args {
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	wantURI := fmt.Sprintf("http://%s:%d/wasm/meshward.wasm", w.host, w.ports["http-admin"])
	if args["-wasm-uri"] != wantURI {
		t.Errorf("-wasm-uri %q, want %q (the admin endpoint's /wasm/meshward.wasm)", args["-wasm-uri"], wantURI)
	}
	if !strings.Contains(string(mustYAML(t, &ef.Spec)), wantURI) {
		t.Errorf("the EnvoyFilter's default configuration does not fetch the module from %s", wantURI)
	}
	if want := fmt.Sprintf("outbound|%d||%s", w.ports["http-collector"], w.host); args["-filter-collector-cluster"] != want {
		t.Errorf("-filter-collector-cluster %q, want %q", args["-filter-collector-cluster"], want)
	}
}

func mustYAML(t *testing.T, v any) []byte {
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
