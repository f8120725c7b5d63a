package gen

import (
	"bytes"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/replay/source"
)

func TestGenerateIsSeededAndLabelled(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Requests = 2000
	a, _ := New(cfg)
	b, _ := New(cfg)
	ra, rb := a.Generate(), b.Generate()
	if !reflect.DeepEqual(ra, rb) {
		t.Fatal("same seed, different traffic")
	}
	cfg.Seed = 2
	c, _ := New(cfg)
	if reflect.DeepEqual(ra, c.Generate()) {
		t.Fatal("the seed changes nothing")
	}
	attackAt := cfg.Start.Add(cfg.Duration * 8 / 10)
	kinds := map[string]int{}
	normal := 0
	for i, r := range ra {
		if i > 0 && r.TS.Before(ra[i-1].TS) {
			t.Fatalf("record %d out of time order", i)
		}
		if r.IsAttack() {
			kinds[r.AttackType]++
			if r.TS.Before(attackAt) {
				t.Errorf("attack %s at %v, before the attack phase", r.AttackType, r.TS)
			}
		} else {
			normal++
		}
	}
	if normal != 2000 || kinds["lateral-movement"] == 0 || kinds["sqli"] == 0 || kinds["exfiltration"] != 5 {
		t.Errorf("normal %d, attacks %v", normal, kinds)
	}
}

func TestJSONLRoundTrip(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Requests = 300
	g, _ := New(cfg)
	recs := g.Generate()
	var buf bytes.Buffer
	w := source.NewJSONLWriter(&buf)
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	var back []*source.Record
	err := source.ReadJSONL(&buf, "gen.jsonl", source.Overrides{}, func(r *source.Record) error { back = append(back, r); return nil },
		func(p source.Problem) { t.Errorf("problem %v", p) })
	if err != nil || len(back) != len(recs) {
		t.Fatalf("read back %d of %d: %v", len(back), len(recs), err)
	}
	for i := range recs {
		a, b := recs[i], back[i]
		if !a.TS.Equal(b.TS) || a.Label != b.Label || a.Request.Path != b.Request.Path || a.Request.Query != b.Request.Query ||
			a.Request.Source != b.Request.Source || string(a.Request.Body) != string(b.Request.Body) || a.Request.Status != b.Request.Status ||
			a.Request.Duration != b.Request.Duration || len(a.Request.Headers) != len(b.Request.Headers) {
			t.Fatalf("record %d changed:\n%+v\n%+v", i, a, b)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Requests, cfg.AttackAt = 5, 2
	if _, err := New(cfg); err == nil {
		t.Error("bad config accepted")
	}
}

func TestAppIsSeededClosedAndLabelled(t *testing.T) {
	cfg := DefaultAppConfig()
	cfg.Requests, cfg.Attacks = 3000, 600
	a, err := NewApp(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewApp(cfg)
	ra, rb := a.Generate(), b.Generate()
	if !reflect.DeepEqual(ra, rb) {
		t.Fatal("same seed, different traffic")
	}
	attackAt := cfg.Start.Add(time.Duration(cfg.AttackAt * float64(cfg.Duration)))
	kinds := map[string]int{}
	// Each route of the normal traffic takes a fixed set of names.
	names := map[string]map[string]bool{}
	normal := 0
	for i, r := range ra {
		if i > 0 && r.TS.Before(ra[i-1].TS) {
			t.Fatalf("record %d out of time order", i)
		}
		if r.IsAttack() {
			kinds[r.AttackType]++
			if r.TS.Before(attackAt) {
				t.Errorf("attack %s at %v, before the attack phase", r.AttackType, r.TS)
			}
			continue
		}
		normal++
		key := r.Request.Method + " " + models.Template(r.Request.Path)
		if names[key] == nil {
			names[key] = map[string]bool{}
		}
		for _, q := range []string{r.Request.Query, string(r.Request.Body)} {
			vs, err := url.ParseQuery(q)
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			for n := range vs {
				names[key][n] = true
			}
		}
	}
	if normal != cfg.Requests {
		t.Errorf("%d normal requests, want %d", normal, cfg.Requests)
	}
	for _, k := range appAttackKinds {
		if kinds[k.name] == 0 {
			t.Errorf("no %s attack among %v", k.name, kinds)
		}
	}
	for route, ns := range names {
		if len(ns) > 16 {
			t.Errorf("route %s takes %d names: not a closed set", route, len(ns))
		}
	}
	if len(names) < 15 {
		t.Errorf("%d routes, want an application's worth", len(names))
	}
}
