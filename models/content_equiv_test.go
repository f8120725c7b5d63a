package models

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// contentAlphabet is what generated values are made of: every class, the
// bytes that start escapes and operators, and runs that form keywords.
var contentAlphabet = []string{
	"a", "b", "z", "A", "Q", "Z", "0", "7", "_", " ", "\t", "'", "\"", "`", "<", ">", "(", ")", "[", "]", "{", "}",
	"/", "\\", ".", ",", ":", "-", "~", "+", "=", "&", "%", "?", "#", ";", "|", "!", "@", "$", "^", "*",
	"\x00", "\x1f", "\x7f", "\x80", "\xc3\xa9", "\xff", "%2f", "%2E", "%u0041", "%U", "%zz", "%", "\\x41", "\\u00", "\\X",
	"&#", "&#x", "&&", "..", "../", "..\\", "sElEcT", "UNION", "cat", "Runtime", "getRuntime", "exec (", "concat(",
}

// contentValue generates one value: keywords of either list in mixed case,
// alphabet runs, and sometimes plain random bytes or a very long value.
func contentValue(g *rand.Rand) string {
	var b strings.Builder
	n := g.IntN(12)
	if g.IntN(20) == 0 {
		n = 400 // longer than MaxValueBytes
	}
	for i := 0; i < n; i++ {
		switch g.IntN(5) {
		case 0:
			w := keywords[g.IntN(len(keywords))]
			b.WriteString(mixCase(g, w))
		case 1:
			ws := lexiconWords[g.IntN(len(lexiconWords))]
			b.WriteString(mixCase(g, ws[g.IntN(len(ws))]))
		case 2:
			for j := g.IntN(4); j >= 0; j-- {
				b.WriteByte(byte(g.IntN(256)))
			}
		default:
			b.WriteString(contentAlphabet[g.IntN(len(contentAlphabet))])
		}
	}
	return b.String()
}

func mixCase(g *rand.Rand, s string) string {
	b := []byte(s)
	for i, c := range b {
		if g.IntN(3) == 0 {
			switch {
			case c >= 'a' && c <= 'z':
				b[i] = c - 'a' + 'A'
			case c >= 'A' && c <= 'Z':
				b[i] = c - 'A' + 'a'
			}
		}
	}
	return string(b)
}

// contentRequest generates a request whose every part carries generated
// values: path, query, headers and a form or JSON body.
func contentRequest(g *rand.Rand) Request {
	methods := []string{"GET", "POST", "PUT", "PROPFIND", "get"}
	r := Request{Method: methods[g.IntN(len(methods))], Path: "/" + contentValue(g) + "/" + contentValue(g), Source: "s", Destination: "d"}
	var q []string
	for i := g.IntN(5); i > 0; i-- {
		q = append(q, contentValue(g)+"="+contentValue(g))
	}
	r.Query = strings.Join(q, "&")
	for i := g.IntN(4); i > 0; i-- {
		r.Headers = append(r.Headers, Header{Name: []string{"user-agent", "cookie", "x-custom", "referer"}[g.IntN(4)], Value: contentValue(g)})
	}
	switch g.IntN(3) {
	case 0:
		r.Headers = append(r.Headers, Header{Name: "content-type", Value: "application/x-www-form-urlencoded"})
		r.Body = []byte(contentValue(g) + "=" + contentValue(g) + "&x=" + contentValue(g))
	case 1:
		r.Headers = append(r.Headers, Header{Name: "content-type", Value: "application/json"})
		r.Body = []byte(fmt.Sprintf(`{"a":%q,"b":[%q]}`, contentValue(g), contentValue(g)))
	}
	return r
}

// checkContentVector compares contentVector with the reference on r, for
// every mask, filter and shaping scoring can use, with the values the
// parameter model knows or not.
func checkContentVector(t testing.TB, r *Request, grams []uint64, known uint64) {
	t.Helper()
	var s paramScratch
	s.extract(r)
	// Each parameter prices new trigrams its own way (priceNovelty).
	for i := 0; i < s.n; i++ {
		s.params[i].novelCost = float64(1 + (known>>uint(i%64))&7)
	}
	for _, k := range []uint64{0, known} {
		for _, mask := range []uint32{allFeatures, allFeatures &^ shapedMask} {
			for _, gr := range [][]uint64{nil, grams} {
				for _, shaped := range []bool{false, true} {
					for _, pathKnown := range []bool{false, true} {
						// A path read apart and merged (a new route's)
						// gives what reading it first does.
						for _, apart := range []bool{false, true} {
							s.known = k
							x, novel := contentVector(r, &s, mask, gr, shaped, pathKnown, apart, 2.5)
							s.known = k
							rx, rnovel := refContentVector(r, &s, mask, gr, shaped, pathKnown, 2.5)
							if x != rx || novel != rnovel {
								t.Fatalf("request %+v (known %#x, mask %#x, grams %v, shaped %v, path known %v, apart %v):\n got %v, %v novel\nwant %v, %v novel",
									r, k, mask, gr != nil, shaped, pathKnown, apart, x, novel, rx, rnovel)
							}
						}
					}
				}
			}
		}
	}
}

// TestContentVectorMatchesReference checks the optimised feature extraction
// against the straightforward one (content_ref_test.go) to the bit, on the
// mesh and list fixtures' requests and on generated requests full of
// keywords, escapes and odd bytes: same features, same novel trigrams,
// hence the same scores.
func TestContentVectorMatchesReference(t *testing.T) {
	m, f := trainMesh(t, 5, 2000)
	grams := m.Content.Grams
	if len(grams) != gramWords {
		t.Fatalf("mesh model has %d filter words", len(grams))
	}
	g := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		r := f.request()
		checkContentVector(t, &r, grams, g.Uint64())
	}
	for _, r := range fixtureRequests() {
		checkContentVector(t, &r, grams, g.Uint64())
	}
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for i := 0; i < n; i++ {
		r := contentRequest(g)
		checkContentVector(t, &r, grams, g.Uint64())
	}
	// Every lexicon word and keyword alone, in three cases, and as a call.
	for _, ws := range append([][]string{keywords}, lexiconWords[:]...) {
		for _, w := range ws {
			for _, v := range []string{w, strings.ToUpper(w), mixCase(g, w), w + " (", "x" + w, w + "x"} {
				r := Request{Method: "GET", Path: "/", Query: "q=" + v, Source: "s", Destination: "d"}
				checkContentVector(t, &r, grams, 0)
			}
		}
	}
}

// FuzzContentVector compares the optimised feature extraction with the
// reference on arbitrary requests.
func FuzzContentVector(f *testing.F) {
	m, _ := trainMesh(f, 5, 2000)
	grams := m.Content.Grams
	f.Add("GET", "/a/../b", "q=1%27+or+1=1--&x=SeLeCt", "cat /etc/passwd; exec (", []byte(`{"a":"<script>alert(1)</script>"}`), "application/json", uint64(3))
	f.Add("POST", "/", "%", "\\x41&#x3c;%u0041", []byte("a=%3Cs&b=concat(0x41)"), "application/x-www-form-urlencoded", uint64(0))
	f.Fuzz(func(t *testing.T, method, path, query, hvalue string, body []byte, ct string, known uint64) {
		r := Request{Method: method, Path: path, Query: query, Body: body, Source: "s", Destination: "d",
			Headers: []Header{{Name: "x-custom", Value: hvalue}, {Name: "content-type", Value: ct}}}
		checkContentVector(t, &r, grams, known)
	})
}

// TestEntropyMatchesReference checks entropy2 against the reference on
// values of every length up to past maxEntropyBytes, from few distinct
// bytes to all 256.
func TestEntropyMatchesReference(t *testing.T) {
	g := rand.New(rand.NewPCG(3, 4))
	for n := 0; n <= maxEntropyBytes+20; n++ {
		for _, alphabet := range []int{1, 2, 16, 64, 256} {
			v := make([]byte, n)
			for i := range v {
				v[i] = byte(g.IntN(alphabet))
			}
			if got, want := entropy2(v), refEntropy2(v); got != want {
				t.Fatalf("entropy2(%q) = %d, reference %d", v, got, want)
			}
		}
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(255 - i)
	}
	if got, want := entropy2(all), refEntropy2(all); got != want {
		t.Fatalf("entropy2(every byte) = %d, reference %d", got, want)
	}
}

// TestSurpriseSearchMatchesReference checks the binary search of the
// reference depths against counting them, for every depth a leaf can give
// and reference samples of every small size, with ties.
func TestSurpriseSearchMatchesReference(t *testing.T) {
	g := rand.New(rand.NewPCG(7, 8))
	for n := 1; n <= 70; n++ {
		c := &ContentModel{Ref: make([]uint16, n), Spread: depthScale}
		for i := range c.Ref {
			c.Ref[i] = uint16(g.IntN(40) * 64)
		}
		slices.Sort(c.Ref)
		c.index()
		for d := 0; d <= 40*64+1; d++ {
			k := 0
			for _, r := range c.Ref {
				if int(r) <= d {
					k++
				}
			}
			want := float64(c.refSurprise[k])
			if k == 0 {
				want += float64(int(c.Ref[0])-d) / c.Spread
			}
			if got := c.surprise(d); got != want {
				t.Fatalf("%d reference depths %v, depth %d: surprise %v, want %v", n, c.Ref, d, got, want)
			}
		}
	}
}

// TestContentWordRunsMatchReference checks the reading of words (their own
// loop in contentAcc.value) against the reference on values made of long
// runs of word bytes, case changes, '_' and bytes that end a word or lie
// outside ASCII, at every offset.
func TestContentWordRunsMatchReference(t *testing.T) {
	g := rand.New(rand.NewPCG(7, 11))
	pieces := []string{"a", "z", "0", "9", "Q", "_", "-", "/", " ", "(", "\x80", "\xff", "`", "{", "@", "[", ":", "abcdefgh", "0123456789", "selectunion"}
	for n := 0; n < 3000; n++ {
		var b strings.Builder
		for k := g.IntN(30); k >= 0; k-- {
			b.WriteString(pieces[g.IntN(len(pieces))])
		}
		v := b.String()
		r := Request{Method: "GET", Path: "/" + v, Query: "q=" + url.QueryEscape(v), Source: "s", Destination: "d",
			Headers: []Header{{Name: "user-agent", Value: v}}}
		checkContentVector(t, &r, nil, 0)
	}
}

// fitRef and reasonRef are fit and reason feature by feature, as defined.
func (c *ContentModel) fitRef(x *ContentVector) (excess int) {
	for f := range x {
		v := max(x[f]&-uint8(c.Mask>>uint(f)&1), c.Floor[f])
		x[f] = v
		excess += max(int(v)-int(c.Max[f]), 0)
	}
	return excess
}

func (c *ContentModel) reasonRef(x *ContentVector) ReasonCode {
	best, code := 0, ReasonContent
	for f := range x {
		if d := int(x[f]) - int(c.High[f]); d > best {
			best, code = d, ReasonContent+1+ReasonCode(f)
		}
	}
	return code
}

// TestFitAndReasonMatchReference: the eight-at-a-time fit and reason equal
// their definitions on random models and vectors across the whole range of
// feature values (0 to maxFeature), extremes included.
func TestFitAndReasonMatchReference(t *testing.T) {
	g := rand.New(rand.NewPCG(7, 11))
	val := func() uint8 {
		switch g.IntN(4) {
		case 0:
			return 0
		case 1:
			return maxFeature
		default:
			return uint8(g.IntN(maxFeature + 1))
		}
	}
	for i := 0; i < 20000; i++ {
		c := &ContentModel{Mask: uint32(g.Uint64()) & allFeatures}
		if i%3 == 0 {
			c.Mask = allFeatures
		}
		for f := range c.Max {
			a, b, d := val(), val(), val()
			lo, hi := min(a, b, d), max(a, b, d)
			c.Floor[f], c.High[f], c.Max[f] = lo, a+b+d-lo-hi, hi
		}
		c.index()
		var x ContentVector
		for f := range x {
			x[f] = val()
		}
		if got, want := c.reason(&x), c.reasonRef(&x); got != want {
			t.Fatalf("reason(%v) = %v, want %v (highs %v)", x, got, want, c.High)
		}
		y := x
		got, want := c.fit(&x), c.fitRef(&y)
		if got != want || x != y {
			t.Fatalf("fit = %d %v, want %d %v", got, x, want, y)
		}
	}
}

// depthRef is depth as a plain walk with bounds checks, its definition.
func (c *ContentModel) depthRef(x *ContentVector) int {
	sum := 0
	for _, t := range c.Trees {
		i := 0
		for {
			n := t[i]
			if n.Feature == leafFeature {
				sum += int(n.Next)
				break
			}
			next := int(n.Next)
			if x[n.Feature] < n.Split {
				next = i + 1
			}
			i = next
		}
	}
	return sum / len(c.Trees)
}

// TestDepthMatchesCheckedWalk: the walk without bounds checks (on an indexed,
// valid model) gives the depths of the checked one, and an invalid forest is
// never walked without checks.
func TestDepthMatchesCheckedWalk(t *testing.T) {
	m := listFixture(t, 1)
	c := m.Content
	if !c.checked {
		t.Fatal("a trained model's trees are not marked valid")
	}
	g := rand.New(rand.NewPCG(3, 5))
	for i := 0; i < 5000; i++ {
		var x ContentVector
		for f := range x {
			x[f] = uint8(g.IntN(maxFeature + 1))
		}
		if got, want := c.depth(&x), c.depthRef(&x); got != want {
			t.Fatalf("depth(%v) = %d, checked walk %d", x, got, want)
		}
	}
	bad := [][][]ContentNode{
		nil,
		{{}},
		{{{Feature: 1, Split: 1, Next: 2}, {Feature: leafFeature}}},                                // right child outside
		{{{Feature: 1, Split: 1, Next: 1}, {Feature: leafFeature}, {Feature: leafFeature}}},        // right child is the left
		{{{Feature: NContent, Split: 1, Next: 2}, {Feature: leafFeature}, {Feature: leafFeature}}}, // no such feature
		{{{Feature: 1, Split: 1, Next: 2}, {Feature: leafFeature}, {Feature: 2}}},                  // last node not a leaf
	}
	for i, trees := range bad {
		if validTrees(trees) {
			t.Errorf("forest %d passes validTrees", i)
		}
	}
}
