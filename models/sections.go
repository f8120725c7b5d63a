package models

import (
	"fmt"
	"sort"
)

// Sections is a trained model split for delivery: each workload's part
// encoded on its own, the content model once. It is what training hands the
// control plane: Encode gives the section a workload's sidecars receive,
// Workload a part decoded for scoring, Model the whole model — without the
// whole model ever having to be decoded at once.
type Sections struct {
	// Meta is the training round's (the sections carry its seed,
	// threshold and target false-positive rate).
	Meta    Meta
	content *ContentModel
	records map[string][]byte // encoded parts by workload (appendWorkload)
}

// Names returns the workloads with a part of their own, sorted, and
// GlobalWorkload when there is a fallback part.
func (s *Sections) Names() []string { return sortedKeys(s.records) }

// Has reports whether the workload has a part of its own (GlobalWorkload:
// whether there is a fallback part).
func (s *Sections) Has(workload string) bool {
	_, ok := s.records[workload]
	return ok
}

// Encode returns the section a sidecar of workload receives: its own part
// if it has one, else the fallback (see EncodeSection).
func (s *Sections) Encode(workload string) ([]byte, error) {
	m := &Model{Meta: s.Meta, Content: s.content, Workloads: map[string]*Workload{}}
	if _, ok := s.records[workload]; !ok || workload == "" {
		workload = GlobalWorkload
	}
	if rec, ok := s.records[workload]; ok {
		w, err := decodeRecord(rec, false)
		if err != nil {
			return nil, err
		}
		m.Workloads[workload] = w
	}
	return encodeSection(m, workload, m.Workloads[workload])
}

// Workload returns a workload's part decoded (with the content model), or
// the fallback part when it has none; nil when there is neither.
func (s *Sections) Workload(name string) (*Workload, error) {
	rec, ok := s.records[name]
	if !ok {
		if rec, ok = s.records[GlobalWorkload]; !ok {
			return nil, nil
		}
	}
	w, err := decodeRecord(rec, true)
	if err != nil {
		return nil, err
	}
	w.attachContent(s.content)
	return w, nil
}

// Model decodes every part into one whole model.
func (s *Sections) Model() (*Model, error) {
	m := &Model{Meta: s.Meta, Content: s.content, Workloads: make(map[string]*Workload, len(s.records))}
	for name, rec := range s.records {
		w, err := decodeRecord(rec, true)
		if err != nil {
			return nil, err
		}
		w.attachContent(s.content)
		m.Workloads[name] = w
	}
	if _, err := Encode(m); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeRecord decodes one encoded part; index prepares it for scoring.
func decodeRecord(rec []byte, index bool) (*Workload, error) {
	d := decoder{b: rec, skipIndex: !index}
	w := d.workload()
	if d.err == nil && d.off != len(d.b) {
		d.fail("end", "%d trailing bytes", len(d.b)-d.off)
	}
	if d.err != nil {
		return nil, d.err
	}
	return w, nil
}

// pruneGlobal encodes the global part within budget bytes: trained over
// every destination, it would grow with the mesh, so it keeps its most
// frequent callers and routes (and the parameters of the routes kept, and
// its most frequent headers), halving what it keeps until it fits.
func pruneGlobal(g *Workload, budget int) ([]byte, error) {
	rec := appendWorkload(nil, g)
	if len(rec) <= budget {
		return rec, nil
	}
	keep := max(len(g.Sources), len(g.Routes), len(g.Params))
	for keep > 1 {
		keep /= 2
		p := pruned(g, keep)
		if rec = appendWorkload(nil, p); len(rec) <= budget {
			return rec, nil
		}
	}
	return nil, fmt.Errorf("train: the global part does not fit max_global_bytes %d even pruned to one caller and route (%d bytes)", budget, len(rec))
}

// pruned is g with its keep most frequent sources, routes and header
// parameters, and the edges and route parameters among them, in the
// canonical order.
func pruned(g *Workload, keep int) *Workload {
	srcCount := make([]uint64, len(g.Sources))
	for _, e := range g.Edges {
		srcCount[e.Source] += uint64(e.Count)
	}
	top := func(n int, count func(i int) uint64) []bool {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		// Most frequent first; ties by position (the canonical order), so
		// pruning is deterministic.
		sort.SliceStable(idx, func(a, b int) bool { return count(idx[a]) > count(idx[b]) })
		kept := make([]bool, n)
		for _, i := range idx[:min(keep, n)] {
			kept[i] = true
		}
		return kept
	}
	keptSrc := top(len(g.Sources), func(i int) uint64 { return srcCount[i] })
	keptRoute := top(len(g.Routes), func(i int) uint64 { return uint64(g.Routes[i].Count) })
	var headers []int
	for i, p := range g.Params {
		if p.Route == AnyRoute && p.Name != AnyParam {
			headers = append(headers, i)
		}
	}
	keptHeader := map[int]bool{}
	for _, j := range headers {
		keptHeader[j] = true
	}
	if len(headers) > keep {
		k := top(len(headers), func(i int) uint64 { return uint64(g.Params[headers[i]].Count) })
		for i, j := range headers {
			keptHeader[j] = k[i]
		}
	}
	p := &Workload{Name: g.Name, CalBase: g.CalBase, CalCenter: g.CalCenter, RespBase: g.RespBase, RespCenter: g.RespCenter}
	newSrc := make([]uint32, len(g.Sources))
	for i, s := range g.Sources {
		if keptSrc[i] {
			newSrc[i] = uint32(len(p.Sources))
			p.Sources = append(p.Sources, s)
		}
	}
	newRoute := make([]uint32, len(g.Routes))
	for i, r := range g.Routes {
		if keptRoute[i] {
			newRoute[i] = uint32(len(p.Routes))
			p.Routes = append(p.Routes, r)
		}
	}
	for _, e := range g.Edges {
		if keptSrc[e.Source] && keptRoute[e.Route] {
			p.Edges = append(p.Edges, Edge{Source: newSrc[e.Source], Route: newRoute[e.Route], Count: e.Count})
		}
	}
	for i, pm := range g.Params {
		switch {
		case pm.Route == AnyRoute && pm.Name == AnyParam, pm.Route == AnyRoute && keptHeader[i]:
		case pm.Route != AnyRoute && keptRoute[pm.Route]:
			pm.Route = newRoute[pm.Route]
		default:
			continue
		}
		pm.Enum = append([]uint64(nil), pm.Enum...)
		pm.Values = append([]string(nil), pm.Values...)
		p.Params = append(p.Params, pm)
	}
	return p
}
