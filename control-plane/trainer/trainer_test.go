package trainer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/internal/redistest"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/gen"
)

func setup(t *testing.T) (*store.Store, *gen.Generator, []store.Record) {
	srv := redistest.Start(t)
	st, err := store.New(srv.Client(t), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := gen.DefaultConfig()
	cfg.Requests = 8000
	g, _ := gen.New(cfg)
	var recs []store.Record
	for _, r := range g.Generate() {
		if !r.IsAttack() {
			recs = append(recs, store.Record{TS: r.TS, Route: models.Template(r.Request.Path), Request: r.Request})
		}
	}
	return st, g, recs
}

func TestRoundPublishesAGatedModel(t *testing.T) {
	st, _, recs := setup(t)
	ctx := context.Background()
	if _, err := Round(ctx, st, DefaultConfig(), time.Unix(0, 0)); err == nil {
		t.Fatal("trained on an empty store")
	}
	if err := st.Ingest(ctx, recs); err != nil {
		t.Fatal(err)
	}
	rep, err := Round(ctx, st, DefaultConfig(), time.Unix(0, 0))
	if err != nil || !rep.Published || rep.Destinations < 10 || rep.FlaggedRate > 0.01 {
		t.Fatalf("first round: %+v %v", rep, err)
	}
	if cur, _ := st.Current(ctx); cur != rep.SHA256 {
		t.Errorf("current %s, published %s", cur, rep.SHA256)
	}
	// A tight gate rejects, and the version in force stays.
	strict := DefaultConfig()
	strict.MaxModelBytes = 2048
	rep2, err := Round(ctx, st, strict, time.Unix(1, 0))
	if err != nil || rep2.Published || rep2.Rejected == "" {
		t.Fatalf("over-budget round: %+v %v", rep2, err)
	}
	if cur, _ := st.Current(ctx); cur != rep.SHA256 {
		t.Error("a rejected candidate replaced the model in force")
	}
	// A later round publishes; rollback returns to the first.
	rep3, err := Round(ctx, st, DefaultConfig(), time.Unix(2, 0))
	if err != nil || !rep3.Published {
		t.Fatalf("third round: %+v %v", rep3, err)
	}
	if back, err := Rollback(ctx, st); err != nil || back != rep.SHA256 {
		t.Errorf("rollback to %s (%v), want %s", back, err, rep.SHA256)
	}
}

// TestPoisonIsNotLearned: samples from a caller the model in force flags
// are not learned by the next round, so the caller stays flagged.
func TestPoisonIsNotLearned(t *testing.T) {
	st, g, recs := setup(t)
	ctx := context.Background()
	if err := st.Ingest(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if rep, err := Round(ctx, st, DefaultConfig(), time.Unix(0, 0)); err != nil || !rep.Published {
		t.Fatalf("%+v %v", rep, err)
	}
	intruder := models.Request{Method: "GET", Path: "/api/v1/secrets", Source: g.Principal("intruder"), Destination: g.Workload("users"), Status: 200}
	var poison []store.Record
	for i := 0; i < 300; i++ {
		poison = append(poison, store.Record{TS: time.Now(), Route: "/api/v1/secrets", Request: intruder})
	}
	if err := st.Ingest(ctx, poison); err != nil {
		t.Fatal(err)
	}
	if _, err := Round(ctx, st, DefaultConfig(), time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	cur, _ := st.Current(ctx)
	b, _ := st.Model(ctx, cur)
	m, err := models.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if v := m.Score(&intruder); v.Score <= m.Meta.Threshold {
		t.Errorf("after poisoning, the intruder scores %.3f: it was learned", v.Score)
	}
}

// TestRoundStartsACanary: with a model in force, a candidate that passes
// the gate goes out as a canary (the version in force stays), and no other
// round trains while it is watched.
func TestRoundStartsACanary(t *testing.T) {
	st, _, recs := setup(t)
	ctx := context.Background()
	if err := st.Ingest(ctx, recs); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Canary = true
	first, err := Round(ctx, st, cfg, time.Unix(0, 0))
	if err != nil || !first.Published || first.Canary {
		t.Fatalf("the first model is in force at once (no stable model to compare with): %+v %v", first, err)
	}
	rep, err := Round(ctx, st, cfg, time.Unix(5, 0))
	if err != nil || !rep.Published || !rep.Canary {
		t.Fatalf("second round: %+v %v", rep, err)
	}
	can, err := st.Canary(ctx)
	if err != nil || can == nil || can.SHA256 != rep.SHA256 || !can.Started.Equal(time.Unix(5, 0)) {
		t.Errorf("canary %+v (%v), want %s", can, err, rep.SHA256)
	}
	if cur, _ := st.Current(ctx); cur != first.SHA256 {
		t.Errorf("the canary replaced the model in force: %s", cur)
	}
	if again, err := Round(ctx, st, cfg, time.Unix(6, 0)); err != nil || again.Published || again.Rejected == "" {
		t.Errorf("a round while the canary is watched: %+v %v", again, err)
	}
}

// TestRoundOnRedisCluster: a training round reads every destination's
// samples from a three-node Redis Cluster and publishes there.
func TestRoundOnRedisCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	st, err := store.New(cluster.Client(t), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	_, _, recs := setup(t)
	ctx := context.Background()
	if err := st.Ingest(ctx, recs); err != nil {
		t.Fatal(err)
	}
	rep, err := Round(ctx, st, DefaultConfig(), time.Unix(0, 0))
	if err != nil || !rep.Published || rep.Destinations < 10 {
		t.Fatalf("round on a cluster: %+v %v", rep, err)
	}
	if cur, _ := st.Current(ctx); cur != rep.SHA256 {
		t.Errorf("current %s, published %s", cur, rep.SHA256)
	}
}

// TestUnreadableCurrentModelDoesNotStopTraining: after an upgrade that
// changes the codec, the model in force (written by the previous version)
// cannot be read; training goes on without it, says why, and publishes a
// model this version reads.
func TestUnreadableCurrentModelDoesNotStopTraining(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	st, err := store.New(rdb, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	_, _, recs := setup(t)
	ctx := context.Background()
	if err := st.Ingest(ctx, recs); err != nil {
		t.Fatal(err)
	}
	rep, err := Round(ctx, st, DefaultConfig(), time.Unix(0, 0))
	if err != nil || !rep.Published {
		t.Fatalf("first round: %+v %v", rep, err)
	}
	old, err := st.Model(ctx, rep.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	// The same model as an older codec version wrote it.
	old[4], old[5] = byte(models.CodecVersion-1), 0
	if err := rdb.Set(ctx, store.DefaultConfig().Prefix+":model:"+rep.SHA256, old, 0).Err(); err != nil {
		t.Fatal(err)
	}
	rep2, err := Round(ctx, st, DefaultConfig(), time.Unix(1, 0))
	if err != nil || !rep2.Published || !strings.Contains(rep2.CurrentUnreadable, "codec version") {
		t.Fatalf("round over an unreadable model in force: %+v %v", rep2, err)
	}
	if cur, _ := st.Current(ctx); cur != rep2.SHA256 {
		t.Errorf("current %s, want the new model %s", cur, rep2.SHA256)
	}
}
