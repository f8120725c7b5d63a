package runner

import (
	"runtime"
	"testing"
	"time"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/gen"
)

// BenchmarkRunner reports replay throughput (requests/s) of the native and
// wasm runners over generated mesh traffic, and the heap in use after a run
// (peak-MB is the Go heap high-water mark the runtime reports).
func BenchmarkRunner(b *testing.B) {
	cfg := gen.DefaultConfig()
	cfg.Requests = 20_000
	g, _ := gen.New(cfg)
	recs := g.Generate()
	tcfg := models.DefaultTrainConfig()
	tcfg.Now = time.Unix(0, 0)
	tr, _ := models.NewTrainer(tcfg)
	for _, r := range recs {
		if !r.IsAttack() {
			tr.Observe(&r.Request)
		}
	}
	m, err := tr.Model()
	if err != nil {
		b.Fatal(err)
	}
	enc, _ := models.Encode(m)
	run := func(b *testing.B, r Runner) {
		b.ResetTimer()
		start := time.Now()
		for b.Loop() {
			if _, err := r.Run(recs); err != nil {
				b.Fatal(err)
			}
		}
		el := time.Since(start)
		b.ReportMetric(float64(b.N*len(recs))/el.Seconds(), "requests/s")
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapSys)/(1<<20), "heap-MB")
	}
	b.Run("native", func(b *testing.B) { run(b, &Native{Model: m}) })
	b.Run("wasm", func(b *testing.B) {
		w, err := NewWasm(wasmPath, enc, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		run(b, w)
	})
}
