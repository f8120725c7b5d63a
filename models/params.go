package models

import (
	"math"
)

// The per-parameter model: for each route and parameter (query, form body,
// or header), how long its values are, which character-class transitions
// they make, how often they carry interpreter keywords, and, when the
// parameter takes few values, which ones. Every signal is a surprise in nats
// (-log of a probability estimated from training counts), so signals from
// different components add up on one scale.

// nTrans is the number of class transitions: from the start state or any
// class, to any class.
const nTrans = (NClasses + 1) * NClasses

// AnyRoute marks a parameter model that covers every route of a workload;
// AnyParam names the model of every value of a workload, the fallback for
// parameters never seen.
const (
	AnyRoute = math.MaxUint32
	AnyParam = "*"
)

// maxEnum bounds the distinct values an enumerable parameter remembers.
const maxEnum = 32

// ParamModel describes the values of one parameter.
//
// The fields scoring reads for every parameter of every request come first,
// together: the transition tables (2 KiB) come last, so that judging a
// known value touches a few adjacent cache lines of the model, not three
// lines kilobytes apart (a cache miss costs more than the work it feeds).
type ParamModel struct {
	Route uint32 // index into Workload.Routes, or AnyRoute
	Name  string
	// Enum holds hashes of the values when the parameter is enumerable, in
	// increasing order, and Values the values themselves in the same order:
	// a value counts as known only when it is the one its hash finds (a
	// chosen value can be made to hash like any other).
	Enum      []uint64
	Values    []string
	enumSet   table
	novelCost float64 // a new trigram's price in this parameter's values
	// TailMed and TailBeta are how surprising the parameter's own
	// held-back normal values were: their median surprise, and how far
	// beyond it they reached on average (an exponential tail), shrunk
	// towards the workload's (fitParamTails). Zero when the workload held
	// back too few values to say (see tail).
	TailMed, TailBeta float32
	newValue          float64 // an unseen value's surprise, when enumerable
	// ShapeEnum says Values are shapes, not values (a model trained on the
	// shapes filters ship, TrainConfig.ShapedValues): a scored value is
	// known when its shape is one of them.
	ShapeEnum bool
	// HashEnum says Enum holds the digests of the values (under the value
	// key Workload.ValueKeyID names; see ValueKey), and Values is empty: a
	// model trained on the records of filters that digest short values
	// enumerates them so. A scored value is known when its digest is one
	// of them.
	HashEnum bool
	// shaped says the model learned value shapes (TrainConfig.ShapedValues),
	// in which no keyword survives: only the keyword marks of records
	// taught it keywords, and a header's value never has one (keywordsOf).
	shaped bool
	// name is what the content model reads of Name (a query or body
	// parameter's), worked out when the content model is attached.
	name nameDigest

	Count uint32
	// LenMean and LenVar describe value lengths.
	LenMean, LenVar float64
	// KeywordValues counts values with at least one keyword, of the
	// KeywordBase values whose keywords training knew: every value of a
	// model trained on values; of one trained on records (TrainConfig.
	// ShapedValues), the query and form values of records that mark
	// keywords (Request.KeywordMarks). Keywords are judged only against a
	// base: with none, a parameter's values are judged without them.
	KeywordValues, KeywordBase uint32
	// Singletons counts enumerated values seen exactly once (Good-Turing).
	Singletons uint32
	// Lengths marks the lengths of the whole values training saw (bit n:
	// n bytes; bit maxLengthBit: that many or more), and LenSingletons
	// counts the lengths seen once: a whole value of a length never seen
	// costs Good-Turing's chance of a new length (newLength), so a field
	// of one length or a few (a token, a date, a code, a page number) pays
	// for a value cut short or drawn out, and free text, whose values keep
	// bringing new lengths, does not.
	Lengths       uint64
	LenSingletons uint32
	newLength     float64
	// nearLengths marks the lengths within one of those seen: a number
	// that gains a digit (an order id past 9999) is the growth of a field,
	// not a value from elsewhere.
	nearLengths uint64
	// GramTokens counts the character trigrams of the parameter's training
	// values, and GramSingletons those that no other training value had:
	// how open the parameter is to new character sequences (priceNovelty).
	GramTokens, GramSingletons uint32
	// Trans counts class transitions (row: from class or start; column: to).
	Trans [nTrans]uint32
	logp  [nTrans]float32 // -log p(transition), from Trans
}

// header reports whether the model is a header's (stored under
// headerPrefix for any route; see modelKey).
func (p *ParamModel) header() bool {
	return p.Route == AnyRoute && len(p.Name) > len(headerPrefix) && p.Name[:len(headerPrefix)] == headerPrefix
}

// tail turns a value's surprise into its tail surprise against this
// parameter's own held-back values: ln 2 at their median, one more nat per
// TailBeta beyond (an exponential tail). A parameter whose values spread
// far (free text) is forgiven what one whose values never vary (an
// identifier, an enumeration) is not.
func (p *ParamModel) tail(s float64) float64 {
	if p.TailBeta == 0 || s <= 0 {
		return s
	}
	m := float64(p.TailMed)
	if s <= m {
		return math.Ln2 * s / m
	}
	return math.Ln2 + (s-m)/float64(p.TailBeta)
}

// minGramTokens is how many trigrams a parameter's training values must
// have had for their novelty rate to price the parameter's: a rate of rare
// events needs many observations (some hundreds of free-text values), and
// read from a few it reordered more requests than it priced right.
const minGramTokens = 16384

// priceNovelty sets the price of a new trigram in this parameter's values:
// -ln of the Good-Turing chance that its next trigram is new, from its own
// training values; with too few of them, def.
func (p *ParamModel) priceNovelty(def float64) {
	p.novelCost = def
	if p.GramTokens >= minGramTokens {
		p.novelCost = -math.Log((float64(p.GramSingletons) + 1) / (float64(p.GramTokens) + 2))
	}
}

// transitionSmoothing is the pseudo-count added to every transition of the
// workload-wide model; priorStrength is how many observations the
// workload-wide model is worth as the prior of one parameter's model.
const (
	transitionSmoothing = 0.5
	priorStrength       = 8.0
)

// transitionProbs returns p(to | from) for every transition: the counts of
// this model, smoothed towards prior (nil: uniform).
func (p *ParamModel) transitionProbs(prior *[nTrans]float64) (probs [nTrans]float64) {
	var rows [NClasses + 1]float64
	for i, c := range p.Trans {
		rows[i/NClasses] += float64(c)
	}
	for i, c := range p.Trans {
		row := rows[i/NClasses]
		if prior == nil {
			probs[i] = (float64(c) + transitionSmoothing) / (row + transitionSmoothing*NClasses)
		} else {
			probs[i] = (float64(c) + priorStrength*prior[i]) / (row + priorStrength)
		}
	}
	return probs
}

// index prepares the model for scoring. A parameter seen a few times leans
// on the workload-wide model (prior); one seen often speaks for itself.
func (p *ParamModel) index(prior *[nTrans]float64) {
	probs := p.transitionProbs(prior)
	for i, pr := range probs {
		p.logp[i] = float32(-math.Log(pr))
	}
	p.enumSet = newTable(len(p.Enum))
	for k, h := range p.Enum {
		p.enumSet.put(h, uint32(k))
	}
}

// knownValue reports whether an enumerable parameter took v in training
// (with ShapeEnum, v's shape).
func (p *ParamModel) knownValue(v []byte) bool {
	if p.HashEnum {
		return false // looked up by digest (Workload.digestKnown)
	}
	if p.ShapeEnum {
		k, ok := p.enumSet.get(hashShape(hashSeed, v))
		return ok && sameShape(p.Values[k], v)
	}
	k, ok := p.enumSet.get(hashBytes(hashSeed, v))
	return ok && same(p.Values[k], v)
}

// Near shapes (ParamModel.nearShape): a value this short, of at most this
// many runs of one class, is looked up with one of its runs of digits a
// digit longer or shorter.
const (
	maxNearShape     = 32
	maxNearShapeRuns = 8
)

// nearShape reports whether v's shape is, but for one digit more or less in
// one of its runs of digits, one a parameter that enumerates shapes took:
// an id that gains a digit (four digits in training, 10001 now) is the
// field growing, not a value from elsewhere. A word a letter longer is not
// (lights, lightsx). Only short values of few runs (identifiers, codes,
// numbers) are looked up so.
func (p *ParamModel) nearShape(v []byte) bool {
	if len(v) == 0 || len(v) > maxNearShape {
		return false
	}
	var shape [maxNearShape]byte
	var starts [maxNearShapeRuns]int
	runs := 0
	for i, c := range v {
		shape[i] = shapeByte(c)
		if i == 0 || shape[i] != shape[i-1] {
			if runs == maxNearShapeRuns {
				return false
			}
			starts[runs] = i
			runs++
		}
	}
	n := len(v)
	var near [maxNearShape + 1]byte
	for r := 0; r < runs; r++ {
		at := starts[r]
		if shape[at] != classRepresentative[ClassDigit] {
			continue
		}
		// One byte more: the run's byte doubled at its start.
		k := copy(near[:], shape[:at+1])
		k += copy(near[k:], shape[at:n])
		if p.knownShape(near[:k]) {
			return true
		}
		// One byte less, where the run has two or more.
		if at+1 < n && shape[at+1] == shape[at] {
			k = copy(near[:], shape[:at])
			k += copy(near[k:], shape[at+1:n])
			if p.knownShape(near[:k]) {
				return true
			}
		}
	}
	return false
}

// knownShape reports whether shape is one of the shapes p enumerates.
func (p *ParamModel) knownShape(shape []byte) bool {
	k, ok := p.enumSet.get(hashBytes(hashSeed, shape))
	return ok && same(p.Values[k], shape)
}

// valueSurprise says how surprising a value is for this parameter, in nats,
// and which signal dominated; full is the value's length so far, whole
// says v is all of it (not a window of a longer one, see valueWindow, nor
// a value the body limit cut): only a whole value is looked up among an
// enumerable parameter's.
//
// kw is the value's keywords as keywordsOf counts them.
func (p *ParamModel) valueSurprise(v []byte, full int, whole bool, kw int) (float64, ReasonCode) {
	// A value an enumerable parameter took in training is normal by
	// definition; most headers of mesh traffic are such (user-agent, accept),
	// and this spares scanning them.
	//
	// A known shape (ShapeEnum) is not: many values have it. It is judged
	// as any value is, and an unknown one costs its novelty on top.
	enum := len(p.Enum) > 0 && whole
	if enum && (p.knownValue(v) || p.ShapeEnum && p.nearShape(v)) {
		if !p.ShapeEnum {
			return 0, ReasonNone
		}
		enum = false
	}
	// The rarest class transition the value makes, plus a share of the mean,
	// so that one odd character and a run of them both count.
	var maxT, sumT float64
	prev := classStartState
	for _, c := range v {
		cl := int(classOf[c])
		s := float64(p.logp[prev*NClasses+cl])
		sumT += s
		if s > maxT {
			maxT = s
		}
		prev = cl
	}
	trans := maxT
	if len(v) > 0 {
		trans += 0.5 * sumT / float64(len(v))
	}
	best, code := trans, ReasonValueShape

	// Length beyond what the parameter's values spread to (Chebyshev),
	// either way for a whole value: a token, a code or a date of one
	// length cut short is as far out as one padded.
	if p.Count >= 8 {
		d := float64(max(len(v), full)) - p.LenMean
		if d < 0 && whole {
			d = -d
		}
		if d > 0 {
			varEff := math.Max(p.LenVar, 1)
			if pr := varEff / (d * d); pr < 1 {
				s := -math.Log(pr)
				if s > best {
					best, code = s, ReasonValueLength
				}
				trans += s
			}
		}
		// A length the parameter's values never had, when they had few.
		if whole && p.newLength > 0 && p.nearLengths&(1<<lengthBit(len(v))) == 0 {
			s := p.newLength
			if s > best {
				best, code = s, ReasonValueLength
			}
			trans += s
		}
	}
	// Keywords, weighted by how rare they were in normal values.
	if kw > 0 {
		pk := (float64(p.KeywordValues) + 1) / (float64(p.KeywordBase) + 2)
		s := -math.Log(pk) * float64(min(kw, maxMarkedKeywords))
		trans += s
		if s > best {
			best, code = s, ReasonKeywords
		}
	}
	// An unseen value of an enumerable parameter (known ones returned above).
	if enum {
		s := p.newValue
		trans += s
		if s > best {
			code = ReasonNewValue
		}
	}
	return trans, code
}

// maxLengthBit is the bit of ParamModel.Lengths that marks every length
// from it up.
const maxLengthBit = 63

// maxClosedLengths is the most lengths a parameter's values may have had
// for a new one to cost its novelty (ParamModel.Lengths): a field closed in
// length (a token, a date, a code, a page number). Free text has a length
// distribution with a tail, whose next value's length is new often enough
// that Good-Turing, counting lengths seen once, underrates it: it is
// judged by its spread (Chebyshev) alone.
const maxClosedLengths = 4

// lengthBit is a length's bit in ParamModel.Lengths.
func lengthBit(n int) uint { return uint(min(n, maxLengthBit)) }

// keywordsOf counts the keywords of p's value (a window of it) as p's model
// judges them: the count a record's mark gave, or the value's own; 0 when
// the model has no base to judge them against (KeywordBase), or p is a
// header's value and the model learned shapes, whose headers' keywords
// records never say.
func (pm *ParamModel) keywordsOf(p *param) int {
	switch {
	case pm.KeywordBase == 0:
		return 0
	case p.kw != kwLive:
		return max(int(p.kw), 0)
	case pm.shaped && p.header:
		return 0
	}
	return countKeywords(p.value)
}

// paramStats accumulates a ParamModel during training.
type paramStats struct {
	count         uint32
	sumLen, sumSq float64
	kw            uint32
	trans         [nTrans]uint32
	values        map[uint64]enumValue // nil once the parameter is not enumerable
	// id numbers the statistics for the trigram counts (gramCounts.owner);
	// twin is the same parameter's statistics in the global section.
	// any is the workload-wide statistics of the same section, ws the
	// section's statistics.
	id                         int32
	twin, any                  *paramStats
	ws                         *workloadStats
	gramTokens, gramSingletons uint32
	// kwOpen says a window of the value being learned had keywords;
	// kwKnown that its keywords are known (param.kw). kwBase counts the
	// values whose keywords were (ParamModel.KeywordBase).
	kwOpen, kwKnown bool
	kwBase          uint32
	// lengths counts the whole values of each length bit (see
	// ParamModel.Lengths).
	lengths [maxLengthBit + 1]uint32
	// digests counts the digests of the values (a record's marks, see
	// Request.marked), while every value came with one and there were at
	// most maxEnum; noDigests says one did not, or there were more.
	digests   map[uint64]uint32
	noDigests bool
}

func newParamStats() *paramStats { return &paramStats{values: map[uint64]enumValue{}} }

// enumValue is one value of a parameter that may be enumerable: how often
// it was seen, and the value (kept from its first sight; another value
// that hashes like it ends the enumeration, see observe).
type enumValue struct {
	n uint32
	v string
}

// observe learns one parameter's value, or one window of a long one
// (param.cont, param.last): each window's transitions, keywords and
// trigrams, and once the value is whole its length, whether any window had
// keywords, and the value itself while the parameter is enumerable (a
// value read in windows makes it not).
func (s *paramStats) observe(p *param) {
	v := p.value
	if n := min(len(v), MaxValueBytes); n > 2 {
		s.gramTokens += uint32(n - 2)
	}
	if !p.cont {
		s.kwKnown, s.kwOpen = p.kw != kwUnknown, false
	}
	if p.kw > 0 || p.kw == kwLive && countKeywords(v) > 0 {
		s.kwOpen = true
	}
	prev := classStartState
	for _, c := range v {
		cl := int(classOf[c])
		s.trans[prev*NClasses+cl]++
		prev = cl
	}
	if !p.last {
		s.values = nil
		return
	}
	s.count++
	n := float64(p.full)
	s.sumLen += n
	s.sumSq += n * n
	s.lengths[lengthBit(p.full)]++
	if s.kwKnown {
		s.kwBase++
		if s.kwOpen {
			s.kw++
		}
	}
	s.kwOpen = false
	if !s.noDigests && s.ws != nil && s.ws.keyID != 0 {
		s.observeDigest(p)
	}
	if s.values != nil {
		if p.cont {
			s.values = nil
			return
		}
		// Trained on shapes, a value is learned as its shape: what a
		// record carries should be one, but records are a workload's word.
		shapes := s.ws != nil && s.ws.shaped
		h := hashBytes(hashSeed, v)
		if shapes {
			h = hashShape(hashSeed, v)
		}
		e, seen := s.values[h]
		switch {
		case !seen && shapes:
			e.v = string(appendShape(make([]byte, 0, len(v)), v, MaxValueBytes))
		case !seen:
			e.v = string(v)
		case shapes && !sameShape(e.v, v), !shapes && e.v != string(v):
			// Another value with the same hash: not an enumeration this
			// model can hold.
			s.values = nil
			return
		}
		e.n++
		s.values[h] = e
		if len(s.values) > maxEnum {
			s.values = nil
		}
	}
}

func (s *paramStats) model(route uint32, name string) ParamModel {
	p := ParamModel{Route: route, Name: name, Count: s.count, KeywordValues: s.kw, KeywordBase: s.kwBase, Trans: s.trans,
		GramTokens: s.gramTokens, GramSingletons: s.gramSingletons}
	for b, n := range s.lengths {
		if n > 0 {
			p.Lengths |= 1 << uint(b)
		}
		if n == 1 {
			p.LenSingletons++
		}
	}
	if s.count > 0 {
		p.LenMean = s.sumLen / float64(s.count)
		p.LenVar = math.Max(0, s.sumSq/float64(s.count)-p.LenMean*p.LenMean)
	}
	// Enumerable: few distinct values, each seen several times on average.
	// The workload-wide model mixes every parameter and never is.
	if s.values != nil && name != AnyParam && s.count >= 4*uint32(len(s.values)) {
		for h, e := range s.values {
			p.Enum = append(p.Enum, h)
			if e.n == 1 {
				p.Singletons++
			}
		}
		sortU64(p.Enum)
		p.Values = make([]string, len(p.Enum))
		for k, h := range p.Enum {
			p.Values[k] = s.values[h].v
		}
	}
	return p
}

// observeDigest counts a whole value's digest (see paramStats.digests).
// A record made with another key (or none: Request.ValueKeyID) says
// nothing either way.
func (s *paramStats) observeDigest(p *param) {
	if p.vk != s.ws.keyID {
		return
	}
	if !p.hasVD || p.cont || len(p.value) > MaxDigestedValue {
		s.digests, s.noDigests = nil, true
		return
	}
	if s.digests == nil {
		s.digests = map[uint64]uint32{}
	}
	s.digests[p.vd]++
	if len(s.digests) > maxEnum {
		s.digests, s.noDigests = nil, true
	}
}

// enumerateDigests makes p enumerate its values' digests (HashEnum) when
// every value it learned came with one, and few distinct, each seen
// several times on average (as values are enumerated, see model). It
// reports whether it did.
func (s *paramStats) enumerateDigests(p *ParamModel) bool {
	if s.noDigests || len(s.digests) == 0 || p.Name == AnyParam || p.header() || s.count < 4*uint32(len(s.digests)) {
		return false
	}
	p.Enum, p.Values, p.ShapeEnum, p.HashEnum, p.Singletons = p.Enum[:0], nil, false, true, 0
	for d, n := range s.digests {
		p.Enum = append(p.Enum, d)
		if n == 1 {
			p.Singletons++
		}
	}
	sortU64(p.Enum)
	return true
}

// maxShapeNovelty bounds how often a parameter's training values brought a
// shape none other had (its enumerated shapes seen once, per value: the
// Good-Turing chance that the next value's shape is new) for its shapes to
// be enumerated. Above it the field is not closed in shape: enumerating it
// would make its own normal values pay a new shape's cost often enough to
// widen their tail, and with it the workload's.
const maxShapeNovelty = 0.01

// enumerateShapes readies the enumeration of a model trained on the shapes
// filters ship (TrainConfig.ShapedValues): its values are shapes
// (ShapeEnum), kept only when the parameter is closed in shape
// (maxShapeNovelty). The content type is not enumerated: a record carries
// it as it is up to MaxShippedContentType bytes and shaped beyond, so what
// was learned mixes values and shapes.
func (p *ParamModel) enumerateShapes() {
	if len(p.Enum) > 0 && p.Name != headerPrefix+shippedAsIs && float64(p.Singletons) <= maxShapeNovelty*float64(p.Count) {
		p.ShapeEnum = true
		return
	}
	p.Enum, p.Values, p.Singletons, p.ShapeEnum = nil, nil, 0, false
}

func sortU64(a []uint64) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}
