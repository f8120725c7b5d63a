package models

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"testing"
	"time"
)

// TestKeywordKinds checks that the keyword list still starts each kind's
// group where keywordKind expects, so no kind is silently empty.
func TestKeywordKinds(t *testing.T) {
	var seen [kwCode]int // code tokens come from the lexicon only
	for i := range keywords {
		seen[keywordKind[i]]++
	}
	for k, n := range seen {
		if n == 0 {
			t.Errorf("keyword kind %d has no keywords", k)
		}
	}
	var a contentAcc
	a.value([]byte("' union select 1 -- ; cat /etc/passwd ../../ <script> Runtime.getRuntime()"), 1)
	for k, n := range a.tokens {
		if n == 0 {
			t.Errorf("kind %d counted nothing in a value with every kind: %v", k, a.tokens)
		}
	}
}

func TestQlogIsMonotone(t *testing.T) {
	prev := qlog(0)
	for x := 1; x < 1<<17; x++ {
		q := qlog(x)
		if q < prev {
			t.Fatalf("qlog(%d) = %d < qlog(%d) = %d", x, q, x-1, prev)
		}
		prev = q
	}
	if qlog(1<<31-1) != 60 {
		t.Errorf("qlog saturates at %d", qlog(1<<31-1))
	}
}

// TestQlogEqualsBranchingForm checks the branch-free qlog against the
// plain definition it replaced, so quantised features (and the models
// trained on them) stay the same.
func TestQlogEqualsBranchingForm(t *testing.T) {
	ref := func(x int) uint8 {
		if x <= 0 {
			return 0
		}
		if x >= 1<<30 {
			return 2 * 30
		}
		v := uint32(x) + 1
		n := bits.Len32(v) - 1
		return uint8(2*n + int(v>>(n-1)&1))
	}
	check := func(x int) {
		if got, want := qlog(x), ref(x); got != want {
			t.Fatalf("qlog(%d) = %d, want %d", x, got, want)
		}
	}
	for x := -5; x < 1<<17; x++ {
		check(x)
	}
	for k := 17; k < 63; k++ {
		for d := -2; d <= 2; d++ {
			check(1<<k + d)
		}
	}
	check(math.MaxInt)
	check(math.MinInt)
}

// listFixture is one service whose list route takes an enumerable sort
// order, free-text searches and page numbers.
func listFixture(t testing.TB, seed uint64) *Model {
	t.Helper()
	cfg := DefaultTrainConfig()
	cfg.Seed = seed
	cfg.Now = time.Unix(1_700_000_000, 0)
	tr, _ := NewTrainer(cfg)
	words := []string{"red shoes", "blue shirt", "Socks, wool", "hat (summer)", "gift card 50", "O'Neill jacket", "t-shirt size: M"}
	for i := 0; i < 3000; i++ {
		q := fmt.Sprintf("sort=%s&page=%d&q=%s", []string{"asc", "desc"}[i%2], i%40, strings.ReplaceAll(words[i%len(words)], " ", "+"))
		tr.Observe(&Request{Method: "GET", Path: fmt.Sprintf("/items/%d", 100+i%900), Query: q, Source: fmt.Sprintf("caller-%d", i%3), Destination: "shop",
			Headers: []Header{{Name: "user-agent", Value: "shop-client/1.2"}}})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestContentModelSeesWhatParamsMiss shows the two models covering each
// other: a request polluted with dozens of copies of a parameter, each value
// normal, is odd only as a whole (the content model's view); an enumerable
// parameter's unseen but bland value is the parameter model's alone.
func TestContentModelSeesWhatParamsMiss(t *testing.T) {
	m := listFixture(t, 1)
	w := m.Workload("shop")
	base := Request{Method: "GET", Path: "/items/345", Query: "sort=asc&page=3&q=red+shoes", Source: "caller-1", Destination: "shop",
		Headers: []Header{{Name: "user-agent", Value: "shop-client/1.2"}}}
	if v := m.Score(&base); v.Score > m.Meta.Threshold || v.NReason != 0 {
		t.Fatalf("normal request flagged: %+v", v)
	}

	polluted := base
	polluted.Query = "sort=asc&q=red+shoes" + strings.Repeat("&page=3", 40)
	withContent := m.Score(&polluted)
	c := w.content
	w.attachContent(nil)
	without := m.Score(&polluted)
	w.attachContent(c)
	if without.Score > m.Meta.Threshold {
		t.Errorf("the parameter model alone flags parameter pollution (the fixture no longer shows what it should): %+v", without)
	}
	if withContent.Score <= m.Meta.Threshold || !hasComponent(withContent, "content") {
		t.Errorf("content model missed parameter pollution: %+v", withContent)
	}

	bland := base
	bland.Query = "sort=red&page=3&q=red+shoes"
	v := m.Score(&bland)
	if v.Score <= m.Meta.Threshold || !hasReason(v, ReasonNewValue) || hasComponent(v, "content") {
		t.Errorf("new value of an enumerable parameter: want the parameter model's reason only: %+v", v)
	}
}

func hasComponent(v Verdict, component string) bool {
	for _, r := range v.ReasonList() {
		if r.Code.Component() == component {
			return true
		}
	}
	return false
}

// TestContentReasonsNameFeatures checks that the content model names the
// feature that drove it.
func TestContentReasonsNameFeatures(t *testing.T) {
	m := listFixture(t, 1)
	r := Request{Method: "GET", Path: "/items/345", Query: "sort=asc&page=3&q=" + strings.Repeat("%27%29%3B+DROP+TABLE+x%3B--+", 12), Source: "caller-1", Destination: "shop",
		Headers: []Header{{Name: "user-agent", Value: "shop-client/1.2"}}}
	v := m.Score(&r)
	var names []string
	for _, rs := range v.ReasonList() {
		if rs.Code.Component() == "content" {
			names = append(names, rs.Code.String())
		}
	}
	if len(names) == 0 || names[0] == "content" || !strings.HasPrefix(names[0], "content_") {
		t.Errorf("content reasons %v in %+v", names, v)
	}
}

func TestContentTrainingDeterministic(t *testing.T) {
	a, _ := Encode(listFixture(t, 3))
	b, _ := Encode(listFixture(t, 3))
	c, _ := Encode(listFixture(t, 4))
	if !bytes.Equal(a, b) {
		t.Error("same seed and requests gave different bytes")
	}
	ma, _ := Decode(a)
	mc, _ := Decode(c)
	if ma.Content == nil || mc.Content == nil {
		t.Fatal("no content model")
	}
	if ea, ec := appendContent(nil, ma.Content), appendContent(nil, mc.Content); bytes.Equal(ea, ec) {
		t.Error("the seed does not change the forest")
	}
}

// TestDecodeRejectsBadContent re-encodes models whose content section is
// wrong in ways a checksum cannot catch (the encoder writes what it is
// given) and expects errors that say what.
func TestDecodeRejectsBadContent(t *testing.T) {
	cases := map[string]func(c *ContentModel){
		"right child": func(c *ContentModel) {
			c.Trees[0] = []ContentNode{{Feature: 1, Split: 3, Next: 0}, {Feature: leafFeature, Next: 256}, {Feature: leafFeature, Next: 256}}
		},
		"feature":        func(c *ContentModel) { c.Trees[1][0].Feature = NContent },
		"content tree 2": func(c *ContentModel) { t := c.Trees[2]; t[len(t)-1] = ContentNode{Feature: 1, Split: 3, Next: 1} },
		"leaf":           func(c *ContentModel) { t := c.Trees[0]; t[len(t)-1].Next = maxLeafDepth + 1 },
		"content mask":   func(c *ContentModel) { c.Mask = 0 },
		"content trees":  func(c *ContentModel) { c.Trees = nil },
		"spread":         func(c *ContentModel) { c.Spread = 0 },
		"reference":      func(c *ContentModel) { c.Ref = nil },
		"maxima":         func(c *ContentModel) { c.Max[3], c.High[3] = 1, 2 },
		"maximum 128":    func(c *ContentModel) { c.Max[5] = maxFeature + 1 },
		"sample size":    func(c *ContentModel) { c.N = 0 },
	}
	for want, corrupt := range cases {
		m := listFixture(t, 1)
		c := *m.Content
		c.Trees = make([][]ContentNode, len(m.Content.Trees))
		for i, tr := range m.Content.Trees {
			c.Trees[i] = append([]ContentNode(nil), tr...)
		}
		corrupt(&c)
		m.Content = &c
		b, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(b); !errors.Is(err, ErrModelFormat) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
	}
	// A model without a content model round-trips as one.
	m := listFixture(t, 1)
	m.Content = nil
	b, _ := Encode(m)
	if d, err := Decode(b); err != nil || d.Content != nil {
		t.Errorf("no content model: %v, %+v", err, d.Content)
	}
}

// FuzzDecodeContent feeds arbitrary bytes to the content section's decoder
// directly (past the checksum that guards it in a whole model): whatever it
// accepts must re-encode to the same bytes and score any vector without
// panicking or looping.
func FuzzDecodeContent(f *testing.F) {
	m := listFixture(f, 1)
	f.Add(appendContent(nil, m.Content))
	f.Add([]byte{0})
	f.Add([]byte{1, 1, 1, 1, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		d := decoder{b: data}
		c := d.content()
		if d.err != nil || c == nil {
			return
		}
		if again := appendContent(nil, c); !bytes.Equal(again, data[:d.off]) {
			t.Fatalf("content section does not round-trip")
		}
		var x ContentVector
		for i := range x {
			x[i] = byte(i * 37)
		}
		for _, v := range []ContentVector{{}, x, {255, 255, 255}} {
			c.raise(&v)
			if s := max(c.surprise(c.depth(&v)), c.rangeSurprise(&v)); math.IsNaN(s) || s < 0 {
				t.Fatalf("surprise %v", s)
			}
		}
	})
}

// TestShapedTrainingReadsNoBodies trains as the control plane does, on the
// shapes the filter ships (no bodies, query values cut short), and checks
// that the content model does not hold the real requests' bodies and long
// values against it, while still seeing odd punctuation in what it reads.
func TestShapedTrainingReadsNoBodies(t *testing.T) {
	cfg := DefaultTrainConfig()
	cfg.Now = time.Unix(1_700_000_000, 0)
	cfg.ShapedValues = true
	tr, _ := NewTrainer(cfg)
	real := func(i int) Request {
		q := fmt.Sprintf("page=%d&q=%s", i%40, strings.Repeat("winter+jacket+", 1+i%9))
		return Request{Method: "POST", Path: "/api/orders", Query: q, Source: "frontend", Destination: "orders",
			Headers: []Header{{Name: "user-agent", Value: "shop-client/1.2"}, {Name: "content-type", Value: "application/json"}},
			Body:    []byte(fmt.Sprintf(`{"items":[{"sku":"A-%d","qty":%d}],"note":"leave at the door, thanks!"}`, i, 1+i%3))}
	}
	for i := 0; i < 3000; i++ {
		r := real(i)
		shaped := r
		shaped.Query = ShapeQuery(r.Query)
		shaped.Body, shaped.RequestBytes = nil, int64(len(r.Body))
		shaped.Headers = []Header{{Name: "user-agent", Value: ShapeValue("shop-client/1.2")}, {Name: "content-type", Value: ShapeValue("application/json")}}
		tr.Observe(&shaped)
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	if m.Content == nil || !m.Content.Shaped || m.Content.Grams != nil || m.Content.Mask&shapedMask != 0 {
		t.Fatalf("shaped training: content model %+v", m.Content)
	}
	for i := 0; i < 200; i++ {
		r := real(5000 + i)
		// (The parameter model does judge the body it never saw: a separate
		// matter; this test is about the content model.)
		if v := m.Score(&r); hasComponent(v, "content") {
			t.Fatalf("content model flags a normal request with its body: %+v", v)
		}
	}
	odd := real(1)
	odd.Query = "page=1&q=%27%29%3B%7B%7D%3C%3E%24%28%29%7C%7C%27%22%60%3B%3B%3B"
	if v := m.Score(&odd); !hasComponent(v, "content") {
		t.Errorf("content model misses punctuation in a query value: %+v", v)
	}
}

// TestNovelDensestCountsTheDensestWindow checks that new trigrams count where
// they cluster: two bursts far apart weigh as one, the same new trigrams
// side by side as all of them.
func TestNovelDensestCountsTheDensestWindow(t *testing.T) {
	c := newGramCounts()
	c.add([]byte(strings.Repeat("a", 64)), noOwner)
	grams := (*[gramWords]uint64)(c.filter())
	a := strings.Repeat("a", 40)
	// Each "xyz" among a's makes five new trigrams: aax axy xyz yza zaa.
	apart := []byte(a + "xyz" + a + "xyz" + a)
	if n, d := novelGrams(grams, apart), novelDensest(grams, apart); n != 10 || d != 5 {
		t.Errorf("two bursts apart: %d new trigrams, %d in the densest window; want 10 and 5", n, d)
	}
	close := []byte(a + "xyz" + "aaaa" + "xyz" + a)
	if n, d := novelGrams(grams, close), novelDensest(grams, close); n != 10 || d != 10 {
		t.Errorf("two bursts together: %d new trigrams, %d in the densest window; want 10 and 10", n, d)
	}
	if d := novelDensest(grams, []byte(a)); d != 0 {
		t.Errorf("nothing new: %d", d)
	}
}

// TestKnownPath: only a known route whose variable segments are numbers,
// hex strings or UUIDs spares the content model reading its path; a token
// segment (which can hold escapes: "1%27" is one), an unknown route or a
// template cut short is read.
func TestKnownPath(t *testing.T) {
	long := "/a/" + strings.Repeat("segment/", 40)
	for _, c := range []struct {
		path       string
		routeKnown bool
		want       bool
	}{
		{"/reviews/12345", true, true},
		{"/orders/0b0c5a8e-9a4f-4a2e-8f58-0d7cfa0c1a6b/items/80f198ee56343ba8", true, true},
		{"/healthz", true, true},
		{"/reviews/12345", false, false},
		{"/reviews/1%27", true, false},
		{"/reviews/order-2024-17", true, true}, // a literal segment: the known route has it
		{long, true, false},
	} {
		tmpl, plain := appendTemplate(nil, c.path)
		if string(tmpl) != Template(c.path) {
			t.Errorf("appendTemplate(%q) = %q, Template %q", c.path, tmpl, Template(c.path))
		}
		if got := c.routeKnown && plain; got != c.want {
			t.Errorf("path %q (route known %v): known path %v, want %v", c.path, c.routeKnown, got, c.want)
		}
	}
}
