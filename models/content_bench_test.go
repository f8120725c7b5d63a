package models

import (
	"runtime"
	"testing"
)

// BenchmarkContent reports the content model's share of scoring a request of
// the 50-service mesh: features, and the forest's depth.
func BenchmarkContent(b *testing.B) {
	m, f := trainMesh(b, 50, 100_000)
	reqs := make([]Request, 1024)
	for i := range reqs {
		reqs[i] = f.request()
	}
	var s paramScratch
	runtime.GC() // see BenchmarkScoreMesh
	b.Run("features", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			r := &reqs[i%len(reqs)]
			s.extract(r)
			contentVector(r, &s, m.Content.Mask, m.Content.Grams, false, false, false, m.Content.NovelCost)
		}
	})
	xs := make([]ContentVector, len(reqs))
	for i := range reqs {
		s.extract(&reqs[i])
		xs[i], _ = contentVector(&reqs[i], &s, m.Content.Mask, m.Content.Grams, false, false, false, m.Content.NovelCost)
	}
	b.Run("forest", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			m.Content.surprise(m.Content.depth(&xs[i%len(xs)]))
		}
	})
}

// BenchmarkScoreMeshContentShare scores the 50-service mesh with and
// without the content model, in one process, so their difference is the
// content model's cost whatever the machine's load.
func BenchmarkScoreMeshContentShare(b *testing.B) {
	m, f := trainMesh(b, 50, 100_000)
	reqs := make([]Request, 1024)
	for i := range reqs {
		reqs[i] = f.request()
	}
	s := new(Scratch)
	runtime.GC() // see BenchmarkScoreMesh
	run := func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			r := &reqs[i%len(reqs)]
			m.Workload(r.Destination).ScoreWith(r, s)
		}
	}
	b.Run("with", run)
	b.Run("without", func(b *testing.B) {
		for _, w := range m.Workloads {
			w.attachContent(nil)
		}
		defer func() {
			for _, w := range m.Workloads {
				w.attachContent(m.Content)
			}
		}()
		run(b)
	})
}
