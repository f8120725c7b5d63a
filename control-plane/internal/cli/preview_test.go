package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/preview"
	"github.com/meshward/meshward/replay/runner"
)

// TestPreviewEqualsEnforceReplay: on make run's traffic, monitored through
// the control plane by the compiled filter, meshward preview (built from
// the records the filters shipped) counts exactly what a replay in
// enforce mode of the same traffic with the same model denies, in total
// and per workload and reason.
func TestPreviewEqualsEnforceReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("make run's loop through the control plane (about 10 s): skipped under -short (make unit); make test runs it")
	}
	wasm := testWasm(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "sample.jsonl")
	if err := Main([]string{"gen", "-out", data, "-requests", "6000"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	recs, _, err := readTraffic([]string{data}, &sourceFlags{format: "auto"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	learn, monitor, err := splitLearn(recs, "80%")
	if err != nil {
		t.Fatal(err)
	}
	lp, m, _, err := runLoop("", wasmFlags{path: wasm, profile: "envoy-1.39"}, 1, nil, learn, monitor, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer lp.Close()
	ctx := context.Background()
	now := time.Now()
	var rep *preview.Report
	// The collector has every batch once the run returns; poll the store
	// all the same, bounded.
	deadline := now.Add(10 * time.Second)
	for {
		if rep, err = preview.Build(ctx, lp.srv.Store(), now.Add(-24*time.Hour), time.Now().Add(time.Hour), "", nil); err != nil {
			t.Fatal(err)
		}
		if rep.Denied > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	native := &runner.Native{Model: m, Enforce: &runner.Enforce{}}
	res, err := native.Run(monitor)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	var total int64
	for i, r := range res {
		if r.Denied {
			want[monitor[i].Request.Destination+" "+r.DenyReason]++
			total++
		}
	}
	got := map[string]int64{}
	for _, w := range rep.Workloads {
		for _, r := range w.Reasons {
			got[w.Workload+" "+r.Reason] += r.Denied
		}
	}
	t.Logf("preview: %d denied; replay in enforce mode: %d", rep.Denied, total)
	if total == 0 {
		t.Fatal("enforce denies nothing of make run's traffic: the test cannot compare")
	}
	if rep.Denied != total || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("preview %d %v\nreplay  %d %v", rep.Denied, got, total, want)
	}
}
