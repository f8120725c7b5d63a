package xds

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

// release trains a small real model of the workloads given (seeds give
// distinct models) and splits it into the release of its sections.
func release(t testing.TB, seed uint64, workloads ...string) (*Release, Sections) {
	t.Helper()
	cfg := models.DefaultTrainConfig()
	cfg.Seed, cfg.Now = seed, time.Unix(0, 0)
	tr, _ := models.NewTrainer(cfg)
	for _, w := range workloads {
		for i := 0; i < 100; i++ {
			tr.Observe(&models.Request{Method: "GET", Path: fmt.Sprintf("/r/%d", i), Source: "a", Destination: w})
		}
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	r, secs, err := ReleaseOf(fmt.Sprintf("v%d", seed), m)
	if err != nil {
		t.Fatal(err)
	}
	return r, secs
}

// with is r with workload's section replaced by the one of another release
// (a retrain that changed that workload only).
func with(r *Release, secs Sections, workload string, from *Release, fromSecs Sections, version string) (*Release, Sections) {
	out := &Release{Version: version, Sections: map[string]string{}}
	outSecs := Sections{}
	for w, sha := range r.Sections {
		out.Sections[w], outSecs[w] = sha, secs[w]
	}
	out.Sections[workload], outSecs[workload] = from.Sections[workload], fromSecs[workload]
	return out, outSecs
}

// receive reads an Envoy's next update, ACKs it, and appends its version
// to got.
func receive(e *envoy, got map[*envoy][]string) (string, *pluginconfig.Settings) {
	e.t.Helper()
	r, s := e.recv()
	e.send(r.VersionInfo, r.Nonce, nil)
	got[e] = append(got[e], r.VersionInfo)
	return r.VersionInfo, s
}

// TestADSServesEachGroupItsSection: each group's nodes receive only their
// workload's section (a workload without one, the fallback), versioned by
// the section's sha256; an Envoy that connects before any model waits; a
// NACK is recorded, not retried; a release whose sections do not load or
// check changes nothing.
func TestADSServesEachGroupItsSection(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, 0)
	a, secsA := release(t, 1, "reviews.shop", "ratings.shop")
	b, secsB := release(t, 2, "reviews.shop", "ratings.shop")

	early := dial(t, srv.Addr, node("reviews-1", "reviews", "shop"))
	if err := srv.Publish(ctx, a, secsA); err != nil {
		t.Fatal(err)
	}
	resp, s := early.recv()
	if resp.VersionInfo != a.Sections["reviews.shop"] || s.Model.SHA256() != resp.VersionInfo || s.Model.SectionFor != "reviews.shop" ||
		len(s.Model.Workloads) != 1 || s.Workload != "reviews.shop" || s.Mode != pluginconfig.ModeMonitor {
		t.Fatalf("first config: version %s, settings %+v", resp.VersionInfo, s)
	}
	early.send(resp.VersionInfo, resp.Nonce, nil) // ACK

	late := dial(t, srv.Addr, node("ratings-1", "ratings", "shop"))
	resp2, s2 := late.recv()
	if resp2.VersionInfo != a.Sections["ratings.shop"] || s2.Model.SectionFor != "ratings.shop" || s2.Workload != "ratings.shop" {
		t.Errorf("late group: %s %s %s", resp2.VersionInfo, s2.Model.SectionFor, s2.Workload)
	}
	late.send(resp2.VersionInfo, resp2.Nonce, nil)
	stranger := dial(t, srv.Addr, node("details-1", "details", "shop"))
	resp3, s3 := stranger.recv()
	if resp3.VersionInfo != a.Sections[models.GlobalWorkload] || s3.Model.SectionFor != models.GlobalWorkload || s3.Workload != "details.shop" {
		t.Errorf("a group without a section: %s %s", resp3.VersionInfo, s3.Model.SectionFor)
	}
	stranger.send(resp3.VersionInfo, resp3.Nonce, nil)

	if err := srv.Publish(ctx, b, secsB); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*envoy{early, late} {
		r, s := e.recv()
		if r.VersionInfo != b.Sections[s.Workload] {
			t.Errorf("%s: version %s after publishing %s", e.node.Id, r.VersionInfo, b.Sections[s.Workload])
		}
		if e == early {
			e.send(a.Sections["reviews.shop"], r.Nonce, &status.Status{Code: 3, Message: "wasm: failed to load"})
		} else {
			e.send(r.VersionInfo, r.Nonce, nil)
		}
	}
	select {
	case <-srv.NACKed():
	case <-time.After(5 * time.Second):
		t.Fatal("the NACK was not recorded")
	}
	nacks := srv.NACKs()
	if len(nacks) != 1 || nacks[0].Group != "reviews.shop" || nacks[0].Error != "wasm: failed to load" {
		t.Errorf("NACKs %+v", nacks)
	}
	if srv.Version() != "v2" || srv.SectionVersion("reviews.shop") != b.Sections["reviews.shop"] {
		t.Errorf("version %s", srv.Version())
	}
	// Sections that do not load, or are not what the release says: refused,
	// and what is served stays.
	c, secsC := release(t, 3, "reviews.shop", "ratings.shop")
	if err := srv.Publish(ctx, c, secsA); err == nil {
		t.Error("a release whose loader returns other sections was published")
	}
	delete(secsC, "ratings.shop")
	if err := srv.Publish(ctx, c, secsC); err == nil {
		t.Error("a release with a section missing was published")
	}
	if srv.Version() != "v2" {
		t.Errorf("a refused release changed what is served: %s", srv.Version())
	}
}

// TestOneChangedSectionPushesOneGroup: with three groups of two Envoys
// each, a release that changes one workload's section sends one update,
// to that group's Envoys only. Proof without waiting for silence: the
// next release changes every section, and each Envoy's next update must be
// that one — an Envoy pushed in between would show the extra version.
func TestOneChangedSectionPushesOneGroup(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, 0)
	workloads := []string{"reviews.shop", "ratings.shop", "details.shop"}
	r1, s1 := release(t, 1, workloads...)
	r2src, s2src := release(t, 2, workloads...)
	r3, s3 := release(t, 3, workloads...)
	if err := srv.Publish(ctx, r1, s1); err != nil {
		t.Fatal(err)
	}
	got := map[*envoy][]string{}
	var all []*envoy
	for _, w := range workloads {
		for i := 0; i < 2; i++ {
			name, ns, _ := strings.Cut(w, ".")
			e := dial(t, srv.Addr, node(fmt.Sprintf("%s-%d", name, i), name, ns))
			receive(e, got)
			all = append(all, e)
		}
	}
	r2, s2 := with(r1, s1, "ratings.shop", r2src, s2src, "v2")
	if err := srv.Publish(ctx, r2, s2); err != nil {
		t.Fatal(err)
	}
	if err := srv.Publish(ctx, r3, s3); err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		w := Group(e.node)
		want := []string{r1.Sections[w], r3.Sections[w]}
		if w == "ratings.shop" {
			want = []string{r1.Sections[w], r2.Sections[w], r3.Sections[w]}
		}
		for len(got[e]) < len(want) {
			receive(e, got)
		}
		if strings.Join(got[e], " ") != strings.Join(want, " ") {
			t.Errorf("%s received %v, want %v", e.node.Id, got[e], want)
		}
	}
}

// TestCanaryPerSection: a canary that changes one workload's section
// reaches only the canary share of that workload's nodes; a rollback
// returns them; a promotion reaches the rest of that group; the other
// groups receive nothing throughout (each of their nodes' next update is
// the final release, which changes every section).
func TestCanaryPerSection(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, 0.3)
	workloads := []string{"reviews.shop", "ratings.shop"}
	a, sa := release(t, 1, workloads...)
	bsrc, sbsrc := release(t, 2, workloads...)
	final, sfinal := release(t, 9, workloads...)
	b, sb := with(a, sa, "reviews.shop", bsrc, sbsrc, "vb")
	if err := srv.PublishCanary(ctx, b, sb); err == nil {
		t.Error("a canary without a stable model was accepted")
	}
	if err := srv.Publish(ctx, a, sa); err != nil {
		t.Fatal(err)
	}
	got := map[*envoy][]string{}
	var canaries, stables, others []*envoy
	for _, w := range workloads {
		name, ns, _ := strings.Cut(w, ".")
		for i := 0; i < 20; i++ {
			e := dial(t, srv.Addr, node(fmt.Sprintf("%s-%d", name, i), name, ns))
			receive(e, got)
			switch {
			case w != "reviews.shop":
				others = append(others, e)
			case InCanary(e.node.Id, 0.3):
				canaries = append(canaries, e)
			default:
				stables = append(stables, e)
			}
		}
	}
	if len(canaries) == 0 || len(stables) == 0 {
		t.Fatalf("%d canaries, %d stable: the hash does not split 20 nodes", len(canaries), len(stables))
	}
	next := func(es []*envoy, want func(e *envoy) string) {
		t.Helper()
		for _, e := range es {
			if v, _ := receive(e, got); v != want(e) {
				t.Fatalf("%s got %.12s, want %.12s", e.node.Id, v, want(e))
			}
		}
	}
	is := func(v string) func(*envoy) string { return func(*envoy) string { return v } }
	rv, sbv := a.Sections["reviews.shop"], b.Sections["reviews.shop"]
	if err := srv.PublishCanary(ctx, b, sb); err != nil {
		t.Fatal(err)
	}
	next(canaries, is(sbv))
	if err := srv.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	next(canaries, is(rv))
	if err := srv.PublishCanary(ctx, b, sb); err != nil {
		t.Fatal(err)
	}
	next(canaries, is(sbv))
	if srv.CanaryVersion() != "vb" {
		t.Errorf("canary version %s", srv.CanaryVersion())
	}
	if err := srv.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	next(stables, is(sbv))
	if srv.Version() != "vb" || srv.CanaryVersion() != "" {
		t.Errorf("after promotion: stable %s canary %s", srv.Version(), srv.CanaryVersion())
	}
	if err := srv.Publish(ctx, final, sfinal); err != nil {
		t.Fatal(err)
	}
	next(append(append(others, canaries...), stables...), func(e *envoy) string { return final.Sections[Group(e.node)] })
	for _, e := range others {
		if len(got[e]) != 2 {
			t.Errorf("%s, of a group the canary did not change, received %v", e.node.Id, got[e])
		}
	}
	for _, e := range stables {
		if len(got[e]) != 3 {
			t.Errorf("%s, a stable node of the group the canary changed, received %v (want the stable, the promoted, the final)", e.node.Id, got[e])
		}
	}
}

// TestCanaryAsAWhole: a canary that changes every section reaches the
// canary share of every group, and its promotion every other node.
func TestCanaryAsAWhole(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, 0.5)
	workloads := []string{"reviews.shop", "ratings.shop"}
	a, sa := release(t, 1, workloads...)
	b, sb := release(t, 2, workloads...)
	if err := srv.Publish(ctx, a, sa); err != nil {
		t.Fatal(err)
	}
	got := map[*envoy][]string{}
	var canaries, stables []*envoy
	for _, w := range workloads {
		name, ns, _ := strings.Cut(w, ".")
		for i := 0; i < 8; i++ {
			e := dial(t, srv.Addr, node(fmt.Sprintf("%s-%d", name, i), name, ns))
			receive(e, got)
			if InCanary(e.node.Id, 0.5) {
				canaries = append(canaries, e)
			} else {
				stables = append(stables, e)
			}
		}
	}
	expect := func(es []*envoy) {
		t.Helper()
		for _, e := range es {
			if v, s := receive(e, got); v != b.Sections[s.Workload] {
				t.Fatalf("%s got %.12s, want %.12s", e.node.Id, v, b.Sections[s.Workload])
			}
		}
	}
	if err := srv.PublishCanary(ctx, b, sb); err != nil {
		t.Fatal(err)
	}
	expect(canaries)
	if err := srv.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	expect(stables)
}

// TestApply makes what is served follow a desired state, loading only
// the sections it does not hold; a state without a stable release changes
// nothing.
func TestApply(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, 0.5)
	a, sa := release(t, 1, "reviews.shop")
	b, sb := release(t, 2, "reviews.shop")
	loads := &countingLoader{}
	for _, step := range []struct {
		stable, canary   *Release
		secs             Sections
		version, canVers string
		loaded           int
	}{
		{nil, nil, sa, "", "", 0},
		{a, nil, sa, "v1", "", 2},
		{a, b, sb, "v1", "v2", 4},
		{a, b, sb, "v1", "v2", 4},
		{a, nil, sa, "v1", "", 4},
		{b, nil, sb, "v2", "", 6},
		{nil, a, sa, "v2", "", 6},
	} {
		loads.secs = step.secs
		if err := srv.Apply(ctx, step.stable, step.canary, loads); err != nil {
			t.Fatal(err)
		}
		if srv.Version() != step.version || srv.CanaryVersion() != step.canVers || loads.n != step.loaded {
			t.Fatalf("serving %s (canary %s) after loading %d sections, want %s (canary %s) after %d", srv.Version(), srv.CanaryVersion(), loads.n, step.version, step.canVers, step.loaded)
		}
	}
}

// countingLoader counts the sections it is asked for.
type countingLoader struct {
	secs Sections
	n    int
}

func (l *countingLoader) SectionsOf(ctx context.Context, want map[string]string) (map[string][]byte, error) {
	l.n += len(want)
	return l.secs.SectionsOf(ctx, want)
}

// TestStableAndCanaryAtOnce: a server that starts with both a stable
// release and a canary (a restart during a canary) serves each node the
// section of its share, the stable and the canary section of one workload
// differing.
func TestStableAndCanaryAtOnce(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, 0.3)
	a, sa := release(t, 1, "cart.shop")
	b, sb := release(t, 2, "cart.shop")
	if err := srv.Apply(ctx, a, b, loaders{sa, sb}); err != nil {
		t.Fatal(err)
	}
	seen := map[bool]bool{}
	for i := 0; len(seen) < 2; i++ {
		e := dial(t, srv.Addr, node(fmt.Sprintf("cart-%d", i), "cart", "shop"))
		r, _ := e.recv()
		canary := InCanary(e.node.Id, 0.3)
		want := a.Sections["cart.shop"]
		if canary {
			want = b.Sections["cart.shop"]
		}
		if r.VersionInfo != want {
			t.Fatalf("%s (canary %v) got %.12s, want %.12s", e.node.Id, canary, r.VersionInfo, want)
		}
		seen[canary] = true
	}
}

// loaders loads from the first Sections that has what is wanted.
type loaders []Sections

func (ls loaders) SectionsOf(ctx context.Context, want map[string]string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for w, sha := range want {
		for _, l := range ls {
			if got, err := l.SectionsOf(ctx, map[string]string{w: sha}); err == nil {
				out[w] = got[w]
				break
			}
		}
		if out[w] == nil {
			return nil, fmt.Errorf("no section %.12s of %s", sha, w)
		}
	}
	return out, nil
}
