package runner

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/goabi/wazerohost"

	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/gen"
	"github.com/meshward/meshward/replay/source"
)

// BenchmarkRunner reports replay throughput from a pcap (requests/s: read
// the capture, reassemble, parse, score) for the native and wasm runners over
// generated mesh traffic, the heap the Go runtime holds after the runs
// (heap-MB, its high-water mark), and the process's peak resident memory
// (rss-MB: with the wasm runner's VMs, whose linear memory is mapped outside
// the Go heap).
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
	var capture bytes.Buffer
	pw, err := source.NewPcapWriter(&capture)
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range recs {
		if err := pw.Write(r); err != nil {
			b.Fatal(err)
		}
	}
	if err := pw.Close(); err != nil {
		b.Fatal(err)
	}
	ids, _ := source.LoadIdentities(strings.NewReader(pw.Addresses()), "ids")
	run := func(b *testing.B, r Runner) {
		b.ResetTimer()
		start := time.Now()
		n := 0
		for b.Loop() {
			var read []*source.Record
			_, err := source.ReadPcap(bytes.NewReader(capture.Bytes()), "gen.pcap", source.PcapOptions{Identities: ids},
				func(r *source.Record) error { read = append(read, r); return nil }, func(source.Problem) {})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := r.Run(read); err != nil {
				b.Fatal(err)
			}
			n += len(read)
		}
		el := time.Since(start)
		b.ReportMetric(float64(n)/el.Seconds(), "requests/s")
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapSys)/(1<<20), "heap-MB")
		b.ReportMetric(peakRSSMB(), "rss-MB")
	}
	b.Run("native", func(b *testing.B) { run(b, &Native{Model: m}) })
	for _, p := range wazerohost.Profiles {
		b.Run("wasm-"+string(p), func(b *testing.B) {
			w, err := NewWasm(wasmPath, m, 0, p)
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			run(b, w)
		})
	}
}
