package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// trained is a small real model of dests destinations; seeds give distinct
// versions.
func trained(t testing.TB, seed uint64, dests int) *models.Model {
	tc := models.DefaultTrainConfig()
	tc.Seed, tc.Now = seed, time.Unix(0, 0)
	tr, _ := models.NewTrainer(tc)
	for d := 0; d < dests; d++ {
		for j := 0; j < 50; j++ {
			tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/v%d/%d", seed, j), Source: "a", Destination: fmt.Sprintf("svc-%d.shop", d)})
		}
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func encode(t testing.TB, m *models.Model) []byte {
	b, err := models.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReleasesOfSections: a whole model is stored as the sections of its
// workloads and its fallback; they read back checked and equal to what
// the model encodes; a release is content-addressed; a section no retrain
// changed is stored once; the history is bounded and what falls off it
// (releases, sections, content models) is deleted unless still in use.
func TestReleasesOfSections(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxModels = 2
	s, srv := newStore(t, cfg)
	ctx := context.Background()
	m1 := trained(t, 1, 3)
	v1, err := s.PutModel(ctx, encode(t, m1))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.PutModel(ctx, encode(t, m1)); err != nil || again != v1 {
		t.Errorf("the same model got another version: %s %v", again, err)
	}
	r1, err := s.Release(ctx, v1)
	if err != nil || len(r1.Sections) != 4 || len(r1.Contents) != 1 || r1.Largest == 0 || r1.Bytes < 4*r1.Largest/2 {
		t.Fatalf("release %+v %v", r1, err)
	}
	got, err := s.SectionsOf(ctx, r1.Sections)
	if err != nil {
		t.Fatal(err)
	}
	for w, b := range got {
		want, _ := models.EncodeSection(m1, w)
		if !bytes.Equal(b, want) {
			t.Errorf("section of %s read back differently", w)
		}
	}
	if name, sha := r1.SectionFor("stranger.shop"); name != models.GlobalWorkload || sha != r1.Sections[models.GlobalWorkload] {
		t.Errorf("a workload without a section gets %s %s", name, sha)
	}
	// The whole model reassembled scores as the one stored.
	whole, err := s.LoadModel(ctx, v1)
	if err != nil || len(whole.Workloads) != 4 {
		t.Fatalf("LoadModel: %v", err)
	}
	r := models.Request{Method: "GET", Path: "/v1/3", Source: "a", Destination: "svc-1.shop"}
	if a, b := m1.Score(&r), whole.Score(&r); a != b {
		t.Errorf("reassembled model scores %+v, stored %+v", b, a)
	}

	// Keys are hash-tagged per workload; the content model is stored once.
	keys, _ := srv.Client(t).Keys(ctx, "mw:*").Result()
	sections, contents := 0, 0
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, "mw:{svc-") && strings.Contains(k, "}:section:"), strings.HasPrefix(k, "mw:{*}:section:"):
			sections++
		case strings.HasPrefix(k, "mw:content:"):
			contents++
		}
	}
	if sections != 4 || contents != 1 {
		t.Errorf("%d section keys and %d content keys, want 4 and 1: %v", sections, contents, keys)
	}

	// Two more versions: the first falls off the history and its keys go,
	// except while it is in force.
	if err := s.SetCurrent(ctx, v1); err != nil {
		t.Fatal(err)
	}
	v2, _ := s.PutModel(ctx, encode(t, trained(t, 2, 3)))
	v3, _ := s.PutModel(ctx, encode(t, trained(t, 3, 3)))
	if list, _ := s.Models(ctx); len(list) != 3 || list[0] != v3 || list[1] != v2 || list[2] != v1 {
		t.Errorf("history %v, want %s %s and, in force, %s", list, v3, v2, v1)
	}
	if _, err := s.SectionsOf(ctx, r1.Sections); err != nil {
		t.Errorf("the release in force lost its sections when it fell off the history: %v", err)
	}
	if err := s.SetCurrent(ctx, v3); err != nil {
		t.Fatal(err)
	}
	v4, _ := s.PutModel(ctx, encode(t, trained(t, 4, 3)))
	if _, err := s.Release(ctx, v1); !errors.Is(err, ErrNotFound) {
		t.Errorf("release off the history and out of force: %v", err)
	}
	if _, err := s.SectionsOf(ctx, r1.Sections); !errors.Is(err, ErrNotFound) {
		t.Errorf("its sections: %v", err)
	}
	if _, err := s.Release(ctx, v4); err != nil {
		t.Error(err)
	}
	if _, err := s.PutModel(ctx, []byte("not a model")); err == nil {
		t.Error("an invalid model was stored")
	}
	if err := s.SetCurrent(ctx, strings.Repeat("0", 64)); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetCurrent of an unknown version: %v", err)
	}
}

// TestUnchangedSectionsAreShared: a release that changes one workload's
// section stores one new section; the rest are the same keys.
func TestUnchangedSectionsAreShared(t *testing.T) {
	s, srv := newStore(t, DefaultConfig())
	ctx := context.Background()
	m := trained(t, 1, 3)
	v1, _ := s.PutModel(ctx, encode(t, m))
	changeSection(m, "svc-1.shop")
	v2, err := s.PutModel(ctx, encode(t, m))
	if err != nil || v2 == v1 {
		t.Fatalf("%s %v", v2, err)
	}
	r1, _ := s.Release(ctx, v1)
	r2, _ := s.Release(ctx, v2)
	changed := 0
	for name, sha := range r2.Sections {
		if r1.Sections[name] != sha {
			changed++
		}
	}
	keys, _ := srv.Client(t).Keys(ctx, "mw:*section*").Result()
	if changed != 1 || len(keys) != 5 {
		t.Errorf("%d sections changed, %d section keys; want 1 and 5", changed, len(keys))
	}
}

// TestTamperedSectionIsRefused: a section key whose bytes are not what its
// address says is an error, not a model.
func TestTamperedSectionIsRefused(t *testing.T) {
	s, srv := newStore(t, DefaultConfig())
	ctx := context.Background()
	v, _ := s.PutModel(ctx, encode(t, trained(t, 1, 2)))
	r, _ := s.Release(ctx, v)
	key := s.sectionKey("svc-0.shop", r.Sections["svc-0.shop"])
	b, _ := srv.Client(t).Get(ctx, key).Bytes()
	b[len(b)-1] ^= 1
	srv.Client(t).Set(ctx, key, b, 0)
	if _, err := s.Section(ctx, "svc-0.shop", r.Sections["svc-0.shop"]); err == nil {
		t.Error("a tampered section was returned")
	}
	// A section filed under another workload's key is refused too.
	other, _ := srv.Client(t).Get(ctx, s.sectionKey("svc-1.shop", r.Sections["svc-1.shop"])).Bytes()
	srv.Client(t).Set(ctx, s.sectionKey("svc-0.shop", r.Sections["svc-1.shop"]), other, 0)
	if _, err := s.Section(ctx, "svc-0.shop", r.Sections["svc-1.shop"]); err == nil {
		t.Error("another workload's section was returned")
	}
}

// TestCanaryVerdictsByRole: a canary watches its changed sections and the
// stable sections of the same workloads; records scored by them are
// counted by role (a few fields per window, whatever the mesh), every
// record under VerdictsAll, and records of unchanged sections in no role.
func TestCanaryVerdictsByRole(t *testing.T) {
	s, _ := newStore(t, DefaultConfig())
	ctx := context.Background()
	m := trained(t, 1, 3)
	v1, _ := s.PutModel(ctx, encode(t, m))
	changeSection(m, "svc-1.shop")
	v2, _ := s.PutModel(ctx, encode(t, m))
	r1, _ := s.Release(ctx, v1)
	r2, _ := s.Release(ctx, v2)
	if err := s.SetCurrent(ctx, v1); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := s.StartCanary(ctx, v2, t0); err != nil {
		t.Fatal(err)
	}
	c, _ := s.Canary(ctx)
	if len(c.Watch) != 2 || c.Watch[r2.Sections["svc-1.shop"]] != RoleCanary || c.Watch[r1.Sections["svc-1.shop"]] != RoleStable {
		t.Fatalf("watch %v", c.Watch)
	}
	var batch []record.Record
	add := func(dst, sha string, n int, flagged bool) {
		for i := 0; i < n; i++ {
			r := rec(t0, "a", dst, "/x", 200, flagged)
			r.ModelSHA256 = sha
			batch = append(batch, r)
		}
	}
	add("svc-1.shop", r2.Sections["svc-1.shop"], 10, true)
	add("svc-1.shop", r2.Sections["svc-1.shop"], 30, false)
	add("svc-1.shop", r1.Sections["svc-1.shop"], 100, false)
	add("svc-0.shop", r1.Sections["svc-0.shop"], 50, true)
	if err := s.Ingest(ctx, batch); err != nil {
		t.Fatal(err)
	}
	v, err := s.Verdicts(ctx, t0, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := v[v2+"|"+RoleCanary]; got.Requests != 40 || got.Flagged != 10 {
		t.Errorf("canary %+v, want 10 flagged of 40", got)
	}
	if got := v[v2+"|"+RoleStable]; got.Requests != 100 || got.Flagged != 0 {
		t.Errorf("stable %+v, want 0 flagged of 100 (svc-0's unchanged section is not compared)", got)
	}
	if got := v[VerdictsAll]; got.Requests != 190 || got.Flagged != 60 {
		t.Errorf("all %+v", got)
	}
	if len(v) != 3 {
		t.Errorf("verdict keys %v", v)
	}
}

// changeSection changes one workload's section a little (a route counted
// once more), leaving the model's other sections as they were.
func changeSection(m *models.Model, workload string) {
	w := *m.Workloads[workload]
	w.Routes = append([]models.Route(nil), w.Routes...)
	w.Routes[0].Count++
	m.Workloads[workload] = &w
}
