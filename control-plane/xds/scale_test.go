package xds

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meshward/meshward/control-plane/trainer"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/internal/meshgen"
)

// TestResourcesDoNotGrowWithTheMesh: trained as the control plane trains
// (one workload at a time, shaped values), a mesh of 1,000 services gives
// every group an ECDS resource — its section inside the filter's
// configuration — of at most 64 KiB, as a mesh of 50 does: what a group
// receives depends on its workload, not on the mesh.
func TestResourcesDoNotGrowWithTheMesh(t *testing.T) {
	srv, err := New(Config{WasmURI: "/etc/meshward/meshward.wasm", Base: trainerBase()})
	if err != nil {
		t.Fatal(err)
	}
	largest := map[int]int{}
	for _, n := range []int{50, 1000} {
		secs, err := meshgen.Train(n, 200, trainer.DefaultConfig().Train)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range append(secs.Names(), "stranger.shop") {
			b, err := secs.Encode(name)
			if err != nil {
				t.Fatal(err)
			}
			group := name
			if group == "*" {
				continue // served as "stranger.shop"
			}
			res, err := srv.Extension(group, b)
			if err != nil {
				t.Fatalf("%d services, group %s: %v", n, group, err)
			}
			size := proto.Size(res)
			if size > 64<<10 {
				t.Errorf("%d services: the resource of %s is %d bytes, over 64 KiB", n, group, size)
			}
			largest[n] = max(largest[n], size)
		}
	}
	t.Logf("largest ECDS resource: %d bytes at 50 services, %d at 1,000", largest[50], largest[1000])
}

// trainerBase is the filter configuration serve gives xDS by default.
func trainerBase() pluginconfig.Config {
	return pluginconfig.Config{Mode: pluginconfig.ModeMonitor}
}
