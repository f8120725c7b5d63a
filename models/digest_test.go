package models

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"reflect"
	"testing"
)

// digestNames are parameter names with what a digest must carry: case
// changes, '_', keywords and lexicon words, digits; and names a digest
// cannot stand for (punctuation, escapes, calls), which are read.
var digestNames = []string{"q", "id", "lang", "orderBy", "user_name", "select", "UNION", "exec", "x1", "Page2",
	"__proto", "ab", "a_b_c_d", "getRuntime", "sort-by", "a.b", "x%41", "f(", "name[]", "o'k", "caf\xc3\xa9"}

// TestNameDigestEqualsReadingTheName: adding a name's digest leaves the
// content accumulator exactly as reading the name does, whatever was read
// before it, with a trigram filter that knows some of its trigrams.
func TestNameDigestEqualsReadingTheName(t *testing.T) {
	g := rand.New(rand.NewPCG(7, 8))
	var grams [gramWords]uint64
	for i := range grams {
		grams[i] = g.Uint64() & g.Uint64() // about a quarter of the trigrams known
	}
	digested := 0
	for i := 0; i < 5000; i++ {
		name := digestNames[g.IntN(len(digestNames))]
		if g.IntN(2) == 0 {
			name = mixCase(g, lexiconWords[g.IntN(len(lexiconWords))][0]) + fmt.Sprint(g.IntN(100))
		}
		cost := 0.5 + g.Float64()
		var want, got contentAcc
		want.reset(&grams)
		want.mask = allFeatures
		for j := g.IntN(3); j > 0; j-- {
			want.value([]byte(contentValue(g)), cost)
		}
		got = want
		d := digestName([]byte(name), &grams, cost)
		want.value([]byte(name), cost)
		if d.ok {
			digested++
			got.addName(&d, []byte(name))
		} else {
			got.value([]byte(name), cost)
		}
		want.longestEntropy()
		got.longestEntropy()
		// Where the longest value is (a view) and how its entropy was
		// found may differ; what the features read may not.
		got.longestPre, want.longestPre = 0, 0
		got.scratch, want.scratch = entropyScratch{}, entropyScratch{} // its list of bytes seen is left over
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("name %q (digest %v): accumulator\n%+v\nwant\n%+v", name, d.ok, got, want)
		}
	}
	if digested < 2000 {
		t.Fatalf("only %d of 5000 names were digested: the test no longer covers digests", digested)
	}
}

// TestKnownNamesScoreAsRead: a section whose known names are added from
// their digests scores every request exactly as one that reads them, and
// a name that only hashes like a known one is never taken for it.
func TestKnownNamesScoreAsRead(t *testing.T) {
	tr := newTestTrainer(t)
	g := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 2000; i++ {
		q := url.Values{}
		for _, n := range digestNames[:10] {
			if g.IntN(2) == 0 {
				q.Set(n, fmt.Sprint(g.IntN(50)))
			}
		}
		tr.Observe(&Request{Method: "GET", Path: "/find", Query: q.Encode(), Source: "gw", Destination: "app"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	w := m.Workload("app")
	digests := 0
	for i := range w.Params {
		if w.Params[i].name.ok {
			digests++
		}
	}
	if digests < 5 {
		t.Fatalf("only %d parameter models carry a name digest", digests)
	}
	read := *w
	read.Params = append([]ParamModel(nil), w.Params...)
	for i := range read.Params {
		read.Params[i].name.ok = false
	}
	read.index()
	read.attachContent(w.content)
	for i := range read.Params {
		read.Params[i].name.ok = false
	}
	var s1, s2 Scratch
	for i := 0; i < 3000; i++ {
		q := url.Values{}
		for j := g.IntN(4); j >= 0; j-- {
			n := digestNames[g.IntN(len(digestNames))]
			if g.IntN(5) == 0 {
				n = contentValue(g)
			}
			q.Add(n, contentValue(g))
		}
		r := Request{Method: "GET", Path: "/find", Query: q.Encode(), Source: "gw"}
		var got, want Verdict
		w.ScoreInto(&r, &s1, &got)
		read.ScoreInto(&r, &s2, &want)
		if got != want {
			t.Fatalf("%s: digests score\n%+v\nreading the names\n%+v", r.Query, got, want)
		}
	}

	// Abuse: a name whose key collides with a known name's (the key is a
	// 64-bit hash an attacker can aim at) is looked up as that name's
	// parameter, but its own bytes are read.
	ri, ok := w.routeIndex.get(hashBytes(methodSeed("GET"), []byte("/find")))
	if !ok {
		t.Fatal("the route /find was not learned")
	}
	forged := "orderBy<script>alert(1)</script>"
	for _, sec := range []*Workload{w, &read} {
		idx, ok := sec.paramIndex.get(paramKey(ri, []byte("orderBy")))
		if !ok || sec.Params[idx].Name != "orderBy" || !w.Params[idx].name.ok {
			t.Fatal("no digested model of orderBy")
		}
		sec.paramIndex.put(paramKey(ri, []byte(forged)), idx)
	}
	r := Request{Method: "GET", Path: "/find", Query: url.Values{forged: {"3"}}.Encode(), Source: "gw"}
	var got, want Verdict
	w.ScoreInto(&r, &s1, &got)
	read.ScoreInto(&r, &s2, &want)
	if got != want {
		t.Fatalf("a name colliding with orderBy scores\n%+v\nreading it\n%+v", got, want)
	}
}

// TestContentMemoChangesNoVerdict: requests scored through one scratch,
// which remembers content vectors, score exactly as each scored with a
// fresh one, with two models (one retrained: a new content model) taking
// turns on the same scratch, and with the memo's slots contended.
func TestContentMemoChangesNoVerdict(t *testing.T) {
	a, b := appFixture(t, 600), appFixture(t, 700)
	wa, wb := a.Workload("app"), b.Workload("app")
	if wa.content == nil || wb.content == nil || wa.content.id == wb.content.id {
		t.Fatal("the fixtures need two content models")
	}
	g := rand.New(rand.NewPCG(11, 12))
	paths := []string{"/search", "/item", "/static/site.css", "/shop/index.php", "/new"}
	var shared Scratch
	hits := 0
	for i := 0; i < 6000; i++ {
		q := url.Values{}
		for j := g.IntN(3); j >= 0; j-- {
			v := fmt.Sprint(g.IntN(30))
			if g.IntN(4) == 0 {
				v = contentValue(g)
			}
			q.Add([]string{"q", "lang", "id", "x"}[g.IntN(4)], v)
		}
		r := Request{Method: "GET", Path: paths[g.IntN(len(paths))], Query: q.Encode(), Source: "gw"}
		w := wa
		if g.IntN(2) == 0 {
			w = wb
		}
		var fresh Scratch
		var got, want Verdict
		before := shared.params.memo
		w.ScoreInto(&r, &shared, &got)
		if shared.params.memo == before {
			hits++
		}
		w.ScoreInto(&r, &fresh, &want)
		if got != want {
			t.Fatalf("request %d (%s?%s): through the memo\n%+v\nfresh\n%+v", i, r.Path, r.Query, got, want)
		}
	}
	if hits < 1000 || hits > 5000 {
		t.Fatalf("%d of 6000 requests found their vector remembered: the test should mix hits and misses", hits)
	}
}
