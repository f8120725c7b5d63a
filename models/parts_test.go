package models

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"sort"
	"strings"
	"testing"
)

// TestTailIsMonotoneAndInverts: a fitted tail maps surprises to tail
// surprises without ever going down, reads the held-back requests' own
// shares at its knots, never claims more than a nat per nat beyond them,
// and inverse undoes it.
func TestTailIsMonotoneAndInverts(t *testing.T) {
	g := rand.New(rand.NewPCG(1, 2))
	for _, zeros := range []int{0, 500, 1900} {
		xs := make([]float64, 2000)
		for i := zeros; i < len(xs); i++ {
			xs[i] = 3 * g.ExpFloat64()
		}
		tail := fitTail(append([]float64(nil), xs...))
		if len(tail.X) == 0 && zeros < 1900 {
			t.Fatalf("%d zeros: no knots", zeros)
		}
		prev := 0.0
		for s := 0.0; s < 60; s += 0.05 {
			ts := tail.surprise(s)
			if ts < prev-1e-9 {
				t.Fatalf("%d zeros: tail surprise falls from %v to %v at %v", zeros, prev, ts, s)
			}
			if s > 0 {
				if back := tail.inverse(ts); math.Abs(tail.surprise(back)-ts) > 1e-6 {
					t.Fatalf("%d zeros: inverse(%v) = %v, whose tail surprise is %v", zeros, ts, back, tail.surprise(back))
				}
			}
			prev = ts
		}
		// At each knot, the share of held-back requests at least as
		// surprising is e^-T (within one request).
		for i, x := range tail.X {
			k := 0
			for _, v := range xs {
				if v >= float64(x) {
					k++
				}
			}
			want := -math.Log(float64(k+1) / float64(len(xs)+1))
			if math.Abs(want-float64(tail.T[i])) > 1.0/float64(k) {
				t.Errorf("%d zeros: knot %v has tail %v, its share says %v", zeros, x, tail.T[i], want)
			}
		}
		// Exponential data of mean 3: a third of a nat per nat beyond.
		if zeros < 1900 && (tail.Slope < 0.2 || tail.Slope > 0.5) {
			t.Errorf("%d zeros: slope %v beyond the knots of Exp(mean 3) data, want about 1/3", zeros, tail.Slope)
		}
		if tail.Slope > maxSlope {
			t.Errorf("slope %v above %v", tail.Slope, float64(maxSlope))
		}
	}
	var none Tail
	if none.surprise(4.2) != 4.2 || none.inverse(4.2) != 4.2 {
		t.Error("a zero tail must leave surprises as they are")
	}
}

// TestCombineHarmonicMean: one strong part counts as its own p-value times
// the number of parts; several moderately strong ones count for more than
// any of them; silent parts change nothing.
func TestCombineHarmonicMean(t *testing.T) {
	var tails [8]float32
	n := int(requestParts - PartValues)
	k := float64(n + 1)
	if s := combine(0, &tails, n); s != 0 {
		t.Errorf("nothing unusual: %v", s)
	}
	tails[PartContent-PartValues] = 20
	if s := combine(0, &tails, n); math.Abs(s-(20-math.Log(k))) > 1e-6 {
		t.Errorf("one part at 20 nats: %v, want 20 - ln %v", s, k)
	}
	one := combine(9, &[8]float32{}, n)
	tails = [8]float32{}
	tails[0], tails[PartContent-PartValues] = 9, 9
	if two := combine(9, &tails, n); two <= one || two > one+math.Log(3)+1e-6 {
		t.Errorf("three parts at 9 nats: %v; one: %v", two, one)
	}
	// Silent parts count as p-values of 1, at once or one by one.
	ref := func(ts ...float64) float64 {
		sum := 0.0
		for _, t := range ts {
			sum += math.Exp(t)
		}
		return math.Log(sum / float64(len(ts)))
	}
	tails = [8]float32{3, 0, 5}
	if got, want := combine(2, &tails, n), ref(2, 3, 0, 5); math.Abs(got-want) > 1e-6 {
		t.Errorf("combine %v, want ln(Σe^t / K) = %v", got, want)
	}
}

// appFixture trains on an application whose search route takes free text
// (q) and an enumerated language (lang), and whose item route takes a
// numeric id, from one caller.
func appFixture(t testing.TB, n int) *Model {
	t.Helper()
	tr := newTestTrainer(t)
	g := rand.New(rand.NewPCG(3, 4))
	words := strings.Fields("red green blue shoes boots garden lamp coffee table winter jacket phone case book desk chair soft warm dry light heavy small large it's don't (new) sale, 2 for 1! what? cheap")
	langs := []string{"en", "de", "fr"}
	for i := 0; i < n; i++ {
		var q []string
		for j := 0; j < 1+g.IntN(5); j++ {
			w := words[g.IntN(len(words))]
			// Free text brings words never seen before.
			if g.IntN(3) == 0 {
				w = fmt.Sprintf("%c%c%c%c", 'a'+g.IntN(26), 'a'+g.IntN(26), 'a'+g.IntN(26), 'a'+g.IntN(26))
			}
			q = append(q, w)
		}
		tr.Observe(&Request{Method: "GET", Path: "/search", Query: "q=" + url.QueryEscape(strings.Join(q, " ")) + "&lang=" + langs[g.IntN(3)],
			Source: "gw", Destination: "app"})
		tr.Observe(&Request{Method: "GET", Path: "/item", Query: fmt.Sprintf("id=%d", 1000+g.IntN(9000)), Source: "gw", Destination: "app"})
		tr.Observe(&Request{Method: "GET", Path: "/static/site.css", Source: "gw", Destination: "app"})
		tr.Observe(&Request{Method: "GET", Path: "/shop/index.php", Source: "gw", Destination: "app"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestOpennessIsLearnedPerParameter: a new character sequence costs what
// its parameter's own training values say (a free-text field brought new
// ones all the time, an identifier never did), a parameter is judged
// against its own normal tail, and an enumerated parameter's unseen value
// or a name the route never carried costs what the workload's closedness
// says.
func TestOpennessIsLearnedPerParameter(t *testing.T) {
	m := appFixture(t, 3000)
	w := m.Workload("app")
	find := func(route, name string) *ParamModel {
		for i := range w.Params {
			p := &w.Params[i]
			if p.Name == name && p.Route != AnyRoute && w.Routes[p.Route].Template == route {
				return p
			}
		}
		t.Fatalf("no model of %s on %s", name, route)
		return nil
	}
	q, id, lang := find("/search", "q"), find("/item", "id"), find("/search", "lang")
	if !(q.novelCost < id.novelCost-1) {
		t.Errorf("a new trigram costs %.2f in free text and %.2f in an identifier: free text must be cheaper", q.novelCost, id.novelCost)
	}
	if q.TailBeta == 0 || !(q.tail(10) < id.tail(10)) {
		t.Errorf("ten nats of surprise are %.2f against q's own tail (med %v, spread %v) and %.2f against id's: q must forgive more",
			q.tail(10), q.TailMed, q.TailBeta, id.tail(10))
	}
	if len(lang.Enum) != 3 || lang.newValue < 8 {
		t.Errorf("lang: %d values, an unseen one costs %.2f nats; want 3 and the rarity of 1 in thousands", len(lang.Enum), lang.newValue)
	}
	score := func(r Request) Verdict { return w.Score(&r) }
	base := Request{Method: "GET", Path: "/search", Query: "q=red+shoes&lang=en", Source: "gw", Destination: "app"}
	if v := score(base); v.Score > m.Meta.Threshold {
		t.Fatalf("an ordinary search is flagged: %+v", v)
	}
	for _, c := range []struct {
		query string
		code  ReasonCode
	}{
		{"q=red+shoes&lang=xx", ReasonNewValue},
		{"q=red+shoes&lang=en&debug=1", ReasonNewParam},
		{"query=red+shoes&lang=en", ReasonNewParam},
	} {
		r := base
		r.Query = c.query
		if v := score(r); v.Score <= m.Meta.Threshold || !hasReason(v, c.code) {
			t.Errorf("%s: %+v, want flagged with %s", c.query, v, c.code)
		}
	}
	// New words in free text stay below the threshold.
	r := base
	r.Query = "q=zqxv+wkjh+shoes&lang=de"
	if v := score(r); v.Score > m.Meta.Threshold {
		t.Errorf("new words in free text flagged: %+v", v)
	}
}

// TestSuffixProbesAreDerivedRoutes: a known route with something appended
// is a derived route (route_suffix), dearer than a new route of its own
// in a workload whose routes never extend each other.
func TestSuffixProbesAreDerivedRoutes(t *testing.T) {
	m := appFixture(t, 1000)
	w := m.Workload("app")
	surprise := func(path string) (float64, ReasonCode) {
		v := w.Score(&Request{Method: "GET", Path: path, Source: "gw", Destination: "app"})
		return v.Parts[PartRoute], v.Codes[PartRoute]
	}
	fresh, code := surprise("/shop/basket.php")
	if code != ReasonNewRoute {
		t.Fatalf("a new page: %s", code)
	}
	for _, p := range []string{"/shop/index.php.bak", "/shop/index.php~", "/shop/index.old", "/shop/index.php/.git/config",
		"/search.orig", "/item/..;/admin", "/static/site.css.swp"} {
		s, code := surprise(p)
		if code != ReasonRouteSuffix || s <= fresh {
			t.Errorf("%s: %s at %.2f nats, want route_suffix above a new page's %.2f", p, code, s, fresh)
		}
	}
	for _, p := range []string{"/", "/shop", "/.env", "/other/index.php"} {
		if _, code := surprise(p); code == ReasonRouteSuffix {
			t.Errorf("%s taken for an extension of a known route", p)
		}
	}
	// A workload whose routes nest (collections and their items) pays less
	// for one more below a known route.
	cfg := DefaultTrainConfig()
	tr, _ := NewTrainer(cfg)
	for i := 0; i < 1000; i++ {
		for _, p := range []string{"/users", "/users/7", "/users/7/orders", "/orders", "/orders/9", "/orders/9/items"} {
			tr.Observe(&Request{Method: "GET", Path: p, Source: "gw", Destination: "api"})
		}
	}
	rest, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	if a, b := rest.Workload("api").derived.cost, w.derived.cost; !(a < b) {
		t.Errorf("a derived route costs %.2f where routes nest and %.2f where they never do", a, b)
	}
}

// TestBodyBeyondTheRoute: bytes beyond the largest body a route was ever
// sent are a signal of their own, even on a route whose sizes vary so
// widely that a size far above its typical one is not rare.
func TestBodyBeyondTheRoute(t *testing.T) {
	cfg := DefaultTrainConfig()
	tr, _ := NewTrainer(cfg)
	form := []Header{{Name: "content-type", Value: "application/x-www-form-urlencoded"}}
	g := rand.New(rand.NewPCG(5, 6))
	largest := 0
	for i := 0; i < 2000; i++ {
		n := int(math.Exp(math.Log(10) + g.Float64()*math.Log(400)))
		largest = max(largest, n)
		tr.Observe(&Request{Method: "POST", Path: "/form", Headers: form, Body: []byte("q=" + strings.Repeat("s", n)), Source: "gw", Destination: "app"})
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	w := m.Workload("app")
	r := Request{Method: "POST", Path: "/form", Headers: form, Body: []byte("q=shoes"), Source: "gw", Destination: "app", RequestBytes: int64(4 * largest)}
	v := w.Score(&r)
	if v.Codes[PartSize] != ReasonBodyBeyond || v.Parts[PartSize] < math.Log(2000*0.9) {
		t.Errorf("%d bytes where at most %d ever came: %+v", r.RequestBytes, largest, v)
	}
	r.RequestBytes = int64(largest / 2)
	if v := w.Score(&r); v.Codes[PartSize] == ReasonBodyBeyond {
		t.Errorf("%d bytes where up to %d came: %+v", r.RequestBytes, largest, v)
	}
}

// TestOlderCodecIsRefused: a model of another codec version is refused with
// an error that says which versions.
func TestOlderCodecIsRefused(t *testing.T) {
	b, err := Encode(trainFixture(t, 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint16(b[4:], CodecVersion-1)
	_, err = Decode(b)
	if !errors.Is(err, ErrModelFormat) || !strings.Contains(err.Error(), fmt.Sprintf("codec version %d, this build reads version %d", CodecVersion-1, CodecVersion)) {
		t.Errorf("a version %d model: %v", CodecVersion-1, err)
	}
}

// TestDecodeRejectsBadTails: a tail that would map surprises backwards is
// refused.
func TestDecodeRejectsBadTails(t *testing.T) {
	m := appFixture(t, 1000)
	w := m.Workload("app")
	for _, bad := range []Tail{
		{Zero: 1, X: []float32{2, 1}, T: []float32{2, 3}, Slope: 1},
		{Zero: 1, X: []float32{1, 2}, T: []float32{3, 2}, Slope: 1},
		{Zero: -1, Slope: 1},
		{Zero: 1, Slope: 3},
	} {
		saved := w.Tails[PartValues]
		w.Tails[PartValues] = bad
		b, err := Encode(m)
		w.Tails[PartValues] = saved
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(b); err == nil || !strings.Contains(err.Error(), "values tail") {
			t.Errorf("tail %+v: %v", bad, err)
		}
	}
}

// TestParamTailsShrinkTowardsTheWorkload: a parameter is judged on its own
// held-back values shrunk towards every held-back value of its workload; one
// with none is judged on the workload's tail, not on its raw surprises (which
// would set the values part for being uncalibrated); with too few values in
// all, surprises stand.
func TestParamTailsShrinkTowardsTheWorkload(t *testing.T) {
	params := make([]ParamModel, 3)
	free, id, unseen := &params[0], &params[1], &params[2]
	raw := map[*ParamModel][]float64{}
	for i := 0; i < 200; i++ {
		raw[free] = append(raw[free], float64(i%40)) // free text: spread far
		raw[id] = append(raw[id], 1+float64(i%3)/10) // an identifier: never far
	}
	fitParamTails(params, raw)
	if !(free.tail(20) < unseen.tail(20) && unseen.tail(20) < id.tail(20)) {
		t.Errorf("20 nats: %.2f against free text, %.2f against a parameter with no held-back values, %.2f against an identifier; want the workload's tail between its parameters'",
			free.tail(20), unseen.tail(20), id.tail(20))
	}
	if unseen.TailBeta == 0 || unseen.tail(20) >= 20 {
		t.Errorf("a parameter with no held-back values keeps its raw surprise (tail %v, %v): 20 nats → %.2f", unseen.TailMed, unseen.TailBeta, unseen.tail(20))
	}
	if free.TailBeta < 1 || id.TailBeta < 1 {
		t.Errorf("spreads %v and %v: at most one nat of tail per nat of surprise", free.TailBeta, id.TailBeta)
	}
	few := make([]ParamModel, 2)
	fitParamTails(few, map[*ParamModel][]float64{&few[0]: {1, 2, 3}})
	for i := range few {
		if few[i].TailMed != 0 || few[i].TailBeta != 0 || few[i].tail(7) != 7 {
			t.Errorf("three values in all gave parameter %d the tail %v, %v", i, few[i].TailMed, few[i].TailBeta)
		}
	}
}

// TestFewHeldBackRequestsSetAConservativeThreshold: a section with too few
// held-back requests to fit its parts' tails reads its threshold from their
// largest few; drawn from an exponential tail, the threshold must let
// through at most twice the target rate in all but a few of many draws,
// not in half of them as the estimated scale alone would.
func TestFewHeldBackRequestsSetAConservativeThreshold(t *testing.T) {
	g := rand.New(rand.NewPCG(3, 4))
	const fpr, trials = 0.001, 400
	for _, n := range []int{8, 66, 150} {
		over := 0
		for range trials {
			xs := make([]float64, n)
			for i := range xs {
				// Exponential with scale 3 nats beyond 2: free text's
				// surprises spread far more than the floor of the span.
				xs[i] = 2 + 3*g.ExpFloat64()
			}
			_, center := combinedCalibration(xs, fpr, false, tailPrior{})
			// The share of such requests beyond the threshold.
			if math.Exp(-(center-2)/3) > 2*fpr {
				over++
			}
		}
		share := float64(over) / trials
		t.Logf("%d held-back requests: %.1f %% of draws over twice the target", n, 100*share)
		if share > 0.15 {
			t.Errorf("%d held-back requests: the threshold lets through more than twice the target rate in %.0f %% of draws (at most 15 %%)", n, 100*share)
		}
	}
}

// TestThinSectionsBorrowTheirTailScale: sections with too few held-back
// requests to fit tails borrow the other such sections' tail scale, so a
// small workload whose few held-back requests happen to spread is not
// given a threshold its own handful of them would put out of reach; and a
// section alone has no one to borrow from.
func TestThinSectionsBorrowTheirTailScale(t *testing.T) {
	g := rand.New(rand.NewPCG(5, 6))
	draw := func(n int, scale float64) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = 1 + scale*g.ExpFloat64()
		}
		return xs
	}
	var sections [][]float64
	for range 12 {
		sections = append(sections, draw(40, 1))
	}
	priors := tailPriors(sections)
	for i, p := range priors {
		if p.weight != tailPriorWeight || p.scale < 0.5 || p.scale > 2 {
			t.Errorf("section %d: prior %+v, want the others' scale (about 1) at weight %d", i, p, tailPriorWeight)
		}
	}
	// Fourteen requests, the largest few far apart: alone, their threshold
	// goes far beyond what the other sections' tails say.
	few := []float64{0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.85, 0.85, 2.7, 2.7, 2.9}
	_, alone := combinedCalibration(append([]float64(nil), few...), 0.001, false, tailPrior{})
	_, borrowed := combinedCalibration(append([]float64(nil), few...), 0.001, false, tailPrior{scale: 1, weight: tailPriorWeight})
	if !(borrowed < alone-3) {
		t.Errorf("with the others' scale, the threshold is %.2f; alone %.2f: borrowing should bring it well down", borrowed, alone)
	}
	if one := tailPriors(sections[:1]); one[0].weight != 0 {
		t.Errorf("a section alone borrowed %+v", one[0])
	}
}

// TestOneSectionCannotMoveTheOthersThresholds: the prior is the median of
// the other sections' scales, so one workload whose held-back requests an
// attacker spreads (to raise every threshold with its own) moves the
// others' priors by no more than a neighbouring section's scale does.
func TestOneSectionCannotMoveTheOthersThresholds(t *testing.T) {
	g := rand.New(rand.NewPCG(7, 8))
	var sections [][]float64
	for range 9 {
		xs := make([]float64, 40)
		for i := range xs {
			xs[i] = 1 + g.ExpFloat64()
		}
		sections = append(sections, xs)
	}
	before := tailPriors(sections)
	loud := make([]float64, 40)
	for i := range loud {
		loud[i] = 1 + 1e6*g.ExpFloat64()
	}
	sort.Float64s(loud)
	after := tailPriors(append(sections, loud))
	for i := range sections {
		if after[i].scale > 2*before[i].scale {
			t.Errorf("section %d: one loud section moved its prior from %.2f to %.2f", i, before[i].scale, after[i].scale)
		}
	}
}

// TestThinCalibrationIsWrittenInPlace: the second pass writes thin
// sections' thresholds into their encodings without decoding them; each
// section must then read back as the very workload it encodes (the same
// bytes encoded afresh), its threshold the borrowed one.
func TestThinCalibrationIsWrittenInPlace(t *testing.T) {
	f := newMeshFixture(30, 7)
	tr := newTestTrainer(t)
	// 30 services, about 100 requests each: every section is thin.
	for range 3000 {
		r := f.request()
		r.Status, r.ResponseBytes = 200, int64(500+f.rng.IntN(3000))
		tr.Observe(&r)
	}
	s, err := tr.Sections()
	if err != nil {
		t.Fatal(err)
	}
	thin := 0
	for _, name := range sortedKeys(s.records) {
		w, err := s.Workload(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := appendWorkload(nil, w); string(got) != string(s.records[name]) {
			t.Fatalf("%s: the patched encoding differs from the workload's own", name)
		}
		if name != GlobalWorkload && w.Tails[PartValues].Slope == 0 && w.Tails[PartContent].Slope == 0 {
			thin++
			if !(w.CalCenter > w.CalBase && w.RespCenter > w.RespBase) {
				t.Errorf("%s: calibration %v/%v, response %v/%v", name, w.CalBase, w.CalCenter, w.RespBase, w.RespCenter)
			}
		}
	}
	if thin < 20 {
		t.Fatalf("%d thin sections, want most of 30", thin)
	}
}

// TestTheFloorIsExtrapolatedFromTheTop: where held-back requests spread
// less than the floor of the span (a workload whose requests are all
// alike), the floor sets the tail, from the fifth largest request as
// before: extrapolating a least slope from the largest fifth would only
// push the threshold out (a new caller at a workload of 2,000 calls fell
// from 0.73 to 0.55).
func TestTheFloorIsExtrapolatedFromTheTop(t *testing.T) {
	xs := make([]float64, 200)
	_, center := combinedCalibration(xs, 0.001, false, tailPrior{})
	if want := math.Log(5 / (0.001 * 200)); math.Abs(center-want) > 1e-9 {
		t.Fatalf("center %.3f, want %.3f (the floor from the fifth largest)", center, want)
	}
}
