package models

import "testing"

// BenchmarkContent reports the content model's share of scoring a request of
// the 50-service mesh: features, and the forest's depth.
func BenchmarkContent(b *testing.B) {
	m, f := trainMesh(b, 50, 100_000)
	reqs := make([]Request, 1024)
	for i := range reqs {
		reqs[i] = f.request()
	}
	var s paramScratch
	b.Run("features", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			r := &reqs[i%len(reqs)]
			s.extract(r)
			contentVector(r, &s, m.Content.Mask, m.Content.Grams)
		}
	})
	xs := make([]ContentVector, len(reqs))
	for i := range reqs {
		s.extract(&reqs[i])
		xs[i], _ = contentVector(&reqs[i], &s, m.Content.Mask, m.Content.Grams)
	}
	b.Run("forest", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			m.Content.surprise(m.Content.depth(&xs[i%len(xs)]))
		}
	})
}
