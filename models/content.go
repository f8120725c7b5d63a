package models

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"sync/atomic"
	"unsafe"
)

// The content model: an isolation forest over generic lexical features of a
// whole request — how long its values are, how random, how much of them is
// punctuation, how deeply encoded, how many interpreter tokens (SQL, shell,
// traversal, script) they carry, and a few request-level counts. Where the
// per-parameter model asks "is this value like this parameter's values?", the
// content model asks "is this request lexically like any normal request?",
// which also covers what has no parameter model of its own: new routes,
// paths, bodies, header values of names never seen.
//
// Features are quantised to bytes (a piecewise-linear log2 scale for counts
// and lengths, a linear scale for ratios), so trees compare bytes and a node
// takes four bytes. The forest is trained once per model on a sample of the
// normal requests (shared by every workload section: lexical normality is
// mesh-wide, and one forest keeps a 50-service model small). Its isolation
// depth becomes a surprise in nats through the tail of a reference sample's
// depths, so it adds to the other components on their scale.

// NContent is the number of content features.
const NContent = 26

// ContentFeature names one content feature.
type ContentFeature uint8

// The content features.
const (
	CFMethod      ContentFeature = iota // a method other than the common ones
	CFPathLen                           // path length
	CFPathSymbols                       // punctuation in the path, other than / - _ .
	CFParams                            // query and form parameters
	CFHeaders                           // headers, other than those the proxy sets (SkipHeader)
	CFTotalBytes                        // bytes of every value examined
	CFMaxValueLen                       // length of the longest value
	CFEntropy                           // byte entropy of the longest value (bits/byte ×2)
	CFSymbolRatio                       // the largest share of punctuation in a value of ≥ 4 bytes (×8)
	CFQuotes                            // ' " `
	CFAngles                            // < >
	CFParens                            // ( ) [ ] { }
	CFSeparators                        // ; |
	CFSymbols                           // ! @ $ ^ *
	CFControl                           // control bytes
	CFHigh                              // bytes ≥ 0x80
	CFSpaces                            // spaces and tabs
	CFCaseMix                           // lower-to-upper changes inside words (SeLeCt)
	CFEncoded                           // %XX still present after decoding once
	CFEscapes                           // \x, \u, &#, %u escapes
	CFSQL                               // SQL tokens
	CFShell                             // shell tokens
	CFTraversal                         // path traversal tokens
	CFScript                            // script and markup tokens
	CFCode                              // code execution and deserialisation words (PHP, Java, templates)
	CFCalls                             // words followed by '(' (function calls)
)

var contentFeatureNames = [NContent]string{
	"method", "path_length", "path_symbols", "params", "headers", "total_bytes", "value_length",
	"entropy", "symbol_ratio", "quotes", "angle_brackets", "brackets", "separators", "symbols",
	"control_bytes", "high_bytes", "spaces", "case_mix", "encoded", "escapes", "sql_tokens",
	"shell_tokens", "traversal_tokens", "script_tokens", "code_tokens", "calls",
}

// String returns the feature's snake_case name.
func (f ContentFeature) String() string {
	if int(f) < NContent {
		return contentFeatureNames[f]
	}
	return "feature"
}

// shapedMask lists the features a value's shape (TrainConfig.ShapedValues)
// does not keep: with shaped training data they are not learned, and not
// measured when scoring. Shapes of query values are cut short, so lengths
// go too.
const shapedMask = 1<<CFTotalBytes | 1<<CFMaxValueLen | 1<<CFEntropy | 1<<CFEncoded | 1<<CFEscapes | 1<<CFSQL | 1<<CFShell | 1<<CFTraversal | 1<<CFScript | 1<<CFCode | 1<<CFCalls

// allFeatures is the mask of every feature.
const allFeatures = 1<<NContent - 1

// ContentVector is a request's content features, quantised.
type ContentVector [NContent]uint8

// Keyword kinds, for the token count features.
const (
	kwSQL = iota
	kwShell
	kwTraversal
	kwScript
	kwCode
	nKwKinds
)

// keywordKind gives each keyword of keywords its kind: the list is grouped,
// and each group starts with the keyword named here.
var keywordKind = func() (kind [256]uint8) {
	starts := [...]string{"select", ";", "../", "<script"}
	k := 0
	for i, kw := range keywords {
		for k+1 < len(starts) && kw == starts[k+1] {
			k++
		}
		kind[i] = uint8(k)
	}
	return kind
}()

// qlog quantises a count on a log scale, two steps per doubling
// (2·log2(1+x), piecewise linear between powers of two): lengths and counts
// within about a third of each other look alike, small counts stay apart.
//
// It takes no branch (clamping is a select): in wasm a taken branch costs
// a jump through the function's block table, and most counts are 0.
func qlog(x int) uint8 {
	// Counts from 2^30 - 1 on give 60 (2·30), as does 2^30 - 1 itself.
	v := uint(min(max(x, 0), 1<<30-1)) + 1 // ≥ 1
	n := uint(bits.Len(v)-1) & 63
	// The bit below the top one (none when v is 1).
	return uint8(2*n + (v<<1)>>n&1)
}

// contentAcc accumulates features over the values of one request. It is
// kept in the request's scratch and reset field by field: in wasm, zeroing
// or copying more than 32 bytes at once is a memory.fill or memory.copy,
// which costs tens of nanoseconds each (wazero). Counts are uint32: a
// request's bytes are far fewer than 2^32.
type contentAcc struct {
	// classes counts bytes by class, in two halves of 32 bytes (see reset);
	// features read those of spaces and punctuation only.
	classes [2][NClasses / 2]uint32
	tokens  [nKwKinds]uint32
	calls   int
	// novel is the most trigrams the filter never saw in any novelWindow
	// consecutive trigrams of one value (see novelDensest), each priced
	// by how open the value's parameter is (param.novelCost).
	novel         float64
	grams         *[gramWords]uint64 // the trigram filter, or nil
	total, maxLen int
	// longest is the longest value examined byte by byte since its entropy
	// was last measured (longestEntropy), longestLen the length of the
	// longest of the request, and entropy that one's.
	longest    []byte
	longestLen int
	entropy    int
	// longestPre is longest's entropy when it is known already (a known
	// parameter name's, nameDigest), else -1.
	longestPre       int
	symRatio         int
	caseMix, escapes int
	encoded          int
	// What the content model reads of a request besides its values: its
	// method, its path's length and punctuation, its parameter and header
	// counts; the price of a new trigram in the path and names; the
	// features in use.
	method, pathLen, pathSymbols int
	params, headers              int
	cost                         float64
	mask                         uint32
	// scratch counts bytes for entropy.
	scratch entropyScratch
}

// reset empties a for a request, with the trigram filter grams (or nil).
func (a *contentAcc) reset(grams *[gramWords]uint64) {
	a.classes[0] = [NClasses / 2]uint32{}
	a.classes[1] = [NClasses / 2]uint32{}
	a.tokens = [nKwKinds]uint32{}
	a.calls, a.novel = 0, 0
	a.grams = grams
	a.total, a.maxLen = 0, 0
	a.longest, a.longestLen, a.entropy, a.longestPre = nil, 0, 0, -1
	a.symRatio, a.caseMix, a.escapes, a.encoded = 0, 0, 0, 0
	a.method, a.pathLen, a.pathSymbols, a.params, a.headers = 0, 0, 0, 0, 0
}

// class returns the count of bytes of class c.
func (a *contentAcc) class(c int) int { return int(a.classes[c>>3&1][c&7]) }

// value adds one value's bytes to the accumulator.
//
// Letters, digits and '_' (most of any normal value) take the short way:
// they only extend the current word and feed the case-mix count; a word is
// looked up in the lexicon once, when it ends, and only if a lexicon word
// has its length, first and last byte. Spaces and punctuation are counted
// by class, and only the bytes that can start an escape or an operator
// keyword are looked at further. Trigrams are counted in a pass of their
// own. The result equals reading every byte for everything
// (refContentAcc in the tests).
func (a *contentAcc) value(v []byte, cost float64) {
	if len(v) > MaxValueBytes {
		v = v[:MaxValueBytes]
	}
	a.total += len(v)
	a.maxLen = max(a.maxLen, len(v))
	if len(v) > a.longestLen {
		a.longest, a.longestLen, a.longestPre = v, len(v), -1
	}
	if a.grams != nil && len(v) >= 3 {
		n := novelGrams(a.grams, v)
		if n > 1 {
			n = novelDensest(a.grams, v)
		}
		if n > 0 {
			a.novel = maxf(a.novel, float64(n)*cost)
		}
	}
	sym, caseMix := 0, 0
	for i := 0; i < len(v); {
		info := uint(byteInfo[v[i]])
		if info&infoWord != 0 {
			// A word, read in a loop of its own: Go's wasm code pays for
			// every branch and every value kept across one, and most bytes
			// are word bytes, which only feed the case-mix count ('_' is
			// punctuation to the symbol ratio). prevLower is 1 after a
			// lower-case letter.
			ws := i
			prevLower := uint(0)
			for {
				caseMix += int(info >> infoUpperBit & prevLower)
				prevLower = info >> infoLowerBit & 1
				sym += int(info >> infoSymBit & 1)
				i++
				if i == len(v) {
					break
				}
				info = uint(byteInfo[v[i]])
				if info&infoWord == 0 {
					break
				}
			}
			if w := v[ws:i]; lexMaybe(w) {
				a.word(w)
			}
			if i == len(v) {
				break
			}
			// A word called as a function: "concat(", "exec (".
			j := i
			for j < len(v) && (v[j] == ' ' || v[j] == '\t') {
				j++
			}
			if j < len(v) && v[j] == '(' {
				a.calls++
			}
		}
		// Letters and digits are all word bytes: v[i] is a space or
		// punctuation.
		sym += int(info >> infoSymBit & 1)
		a.classes[info>>3&1][info&7]++ // info&infoClass
		if info&infoSpecial != 0 {
			// Called only when the next byte can continue an escape or a
			// keyword: a call costs far more in wasm than this test, and
			// paths and headers are full of '/', '.' and spaces.
			next := byte(0)
			if i+1 < len(v) {
				next = lower(v[i+1])
			}
			if specialNext[v[i]][next>>6]>>(next&63)&1 != 0 {
				a.special(v, i)
			}
		}
		i++
	}
	a.caseMix += caseMix
	// 8·sym/len(v) > symRatio, tested without dividing.
	if len(v) >= 4 && 8*sym >= (a.symRatio+1)*len(v) {
		a.symRatio = 8 * sym / len(v)
	}
}

// special counts what starts at v[i], a byte that can start an escape or
// an operator keyword.
func (a *contentAcc) special(v []byte, i int) {
	c := v[i]
	switch c {
	case '%':
		if i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
			a.encoded++
		} else if i+1 < len(v) && (v[i+1] == 'u' || v[i+1] == 'U') {
			a.escapes++
		}
	case '\\':
		if i+1 < len(v) && (v[i+1] == 'x' || v[i+1] == 'u' || v[i+1] == 'X' || v[i+1] == 'U') {
			a.escapes++
		}
	case '&':
		if i+1 < len(v) && v[i+1] == '#' {
			a.escapes++
		}
	}
	// The keywords starting with c, when one can continue with the next
	// byte (0 past the end, where only one-byte keywords match).
	next := byte(0)
	if i+1 < len(v) {
		next = lower(v[i+1])
	}
	if operatorNext[c][next>>6]>>(next&63)&1 == 0 {
		return
	}
	for _, k := range operatorIndex[c] {
		if hasPrefixFold(v[i:], keywords[k]) {
			a.tokens[keywordKind[k]]++
		}
	}
}

// lexMaybe reports whether a lexicon word has w's length, first and last
// byte: only then can w be one, and is it worth hashing.
func lexMaybe(w []byte) bool {
	n := len(w)
	if n > maxLexWord {
		return false
	}
	f, l := w[0], w[n-1]
	return lexShape[n][0][f>>6]>>(f&63)&(lexShape[n][1][l>>6]>>(l&63))&1 != 0
}

// word looks one word of a value up in the lexicon and counts its kinds.
func (a *contentAcc) word(w []byte) {
	h := uint64(lexSeed)
	for _, c := range w {
		h = (h ^ uint64(wordByte[c])) * lexPrime
	}
	if kinds := lexKinds(h); kinds != 0 {
		if kinds&(1<<lexSQL) != 0 {
			a.tokens[kwSQL]++
		}
		if kinds&(1<<lexShell) != 0 {
			a.tokens[kwShell]++
		}
		if kinds&(1<<lexCode) != 0 {
			a.tokens[kwCode]++
		}
		if kinds&(1<<lexScript) != 0 {
			a.tokens[kwScript]++
		}
	}
}

// novelGrams counts the trigrams of v (≥ 3 bytes) the filter never saw.
func novelGrams(grams *[gramWords]uint64, v []byte) int {
	n := 0
	g := uint32(gramFold[v[0]])<<8 | uint32(gramFold[v[1]])
	for _, c := range v[2:] {
		g = (g<<8 | uint32(gramFold[c])) & 0xFFFFFF
		s := gramSlot(g)
		n += int(^grams[s>>6] >> (s & 63) & 1)
	}
	return n
}

// novelDensest returns the most trigrams the filter never saw among any
// novelWindow consecutive trigrams of v (≥ 3 bytes): how densely new
// character sequences cluster, not how many a value has in all. A payload
// is a short burst of sequences normal input never contains; long benign
// text (prose, a language or a token format training saw little of) has
// new sequences too, but spread out, and would otherwise outscore it by
// its length alone. Values with fewer than two new trigrams (most) need
// no second look: novelGrams's count is the answer.
func novelDensest(grams *[gramWords]uint64, v []byte) int {
	// win holds the trigrams' novelty, one bit each (newest lowest); the
	// count can only reach a new high where a new trigram comes in.
	var win uint32
	most := 0
	g := uint32(gramFold[v[0]])<<8 | uint32(gramFold[v[1]])
	for _, c := range v[2:] {
		g = (g<<8 | uint32(gramFold[c])) & 0xFFFFFF
		s := gramSlot(g)
		nov := uint32(^grams[s>>6]>>(s&63)) & 1
		win = win<<1 | nov
		if nov != 0 {
			most = max(most, bits.OnesCount32(win&(1<<novelWindow-1)))
		}
	}
	return most
}

// novelWindow is how many consecutive trigrams novelDensest looks at
// (fewer than 32, the bits of its window): about the span of one injected
// fragment ("' or 1=1--", "${jndi:", "<svg/onload").
const novelWindow = 16

// operatorNext marks, for each byte c that starts operator keywords, the
// (lower-case) bytes that can follow c in one of them; every byte when a
// keyword is c alone.
var operatorNext = func() (t [256][4]uint64) {
	for _, k := range keywords {
		c := k[0]
		if classOf[c] <= ClassDigit {
			continue
		}
		if len(k) == 1 {
			t[c] = [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
			continue
		}
		n := k[1]
		t[c][n>>6] |= 1 << (n & 63)
	}
	return t
}()

// specialNext marks, for each byte that can start an escape or an operator
// keyword, the (lower-case) next bytes with which it can: those of
// operatorNext, and for '%', '\\' and '&' those that can follow them in an
// escape. special finds nothing after any other.
var specialNext = func() (t [256][4]uint64) {
	t = operatorNext
	mark := func(c byte, next string) {
		for i := 0; i < len(next); i++ {
			n := next[i]
			t[c][n>>6] |= 1 << (n & 63)
		}
	}
	mark('%', "0123456789abcdefu")
	mark('\\', "xu")
	mark('&', "#")
	return t
}()

// operatorIndex lists, for each punctuation byte, the keywords that start
// with it. Keywords that start with a letter or digit are words, and the
// lexicon has them.
var operatorIndex = func() (idx [256][]uint8) {
	for i, k := range keywords {
		if c := k[0]; classOf[c] > ClassDigit {
			idx[c] = append(idx[c], uint8(i))
		}
	}
	return idx
}()

// byteInfo packs, per byte, what reading a value needs, so the loop looks
// up one table: its character class (bits 0–3) and flags: a lower- or
// upper-case letter, a word byte (letters, digits, '_'), a byte that can
// start an escape or an operator keyword (special), and punctuation, control
// or high byte (a class above ClassSpace, counted by the symbol ratio).
var byteInfo = func() (t [256]uint16) {
	for c := range t {
		t[c] = uint16(classOf[c])
		if wordByte[c] != 0 {
			t[c] |= infoWord
		}
		switch classOf[c] {
		case ClassLower:
			t[c] |= 1 << infoLowerBit
		case ClassUpper:
			t[c] |= 1 << infoUpperBit
		}
		if classOf[c] > ClassSpace {
			t[c] |= 1 << infoSymBit
		}
		if c == '%' || c == '\\' || c == '&' || len(operatorIndex[c]) > 0 {
			t[c] |= infoSpecial
		}
	}
	return t
}()

const (
	infoClass    = NClasses - 1
	infoLowerBit = 4
	infoUpperBit = 5
	infoSymBit   = 8 // punctuation, control and high bytes
	infoWord     = 1 << 6
	infoSpecial  = 1 << 7
)

// wordByte maps the bytes of words (letters, digits, '_') to lower case,
// and every other byte to 0.
var wordByte = func() (t [256]byte) {
	for c := 0; c < 256; c++ {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
			t[c] = byte(c)
		case c >= 'A' && c <= 'Z':
			t[c] = byte(c) + 'a' - 'A'
		}
	}
	return t
}()

// entropy2 returns the byte entropy of v (its first maxEntropyBytes) in
// half bits per byte.
func entropy2(v []byte) int {
	var e entropyScratch
	return e.entropy2(v)
}

// entropyScratch is what entropy2 counts in, kept between calls: zeroing
// half a kilobyte per call is a memory.fill in wasm, which costs as much as
// counting a value (wazero). Its histogram is all zeros between calls.
type entropyScratch struct {
	hist [256]uint16
	seen [256]byte
}

// entropy2 returns the byte entropy of v (its first maxEntropyBytes) in
// half bits per byte, leaving e's histogram zero again.
func (e *entropyScratch) entropy2(v []byte) int {
	if len(v) < 2 {
		return 0
	}
	if len(v) > maxEntropyBytes {
		v = v[:maxEntropyBytes]
	}
	// Count the bytes, listing each distinct byte at its first occurrence,
	// then add k·log2 k in that order: the order of adding up a value's
	// bytes one by one, so the float32 sum is the same to the bit.
	hist, seen := &e.hist, &e.seen
	nd := 0
	for _, c := range v {
		k := hist[c]
		hist[c] = k + 1
		seen[nd] = c
		nd += int((uint32(k) - 1) >> 31) // 1 when k == 0
	}
	var sum float32
	for _, c := range seen[:nd] {
		sum += klog2k[hist[c]]
		hist[c] = 0
	}
	n := len(v)
	return int(2 * (klog2k[n]/float32(n) - sum/float32(n)))
}

// maxEntropyBytes bounds the bytes entropy is measured over.
const maxEntropyBytes = 256

// klog2k[k] is k·log2 k, for the counts of a value of up to MaxValueBytes.
var klog2k = func() (t [MaxValueBytes + 1]float32) {
	for k := 2; k <= MaxValueBytes; k++ {
		t[k] = float32(float64(k) * math.Log2(float64(k)))
	}
	return t
}()

// pathSymbol is 1 for the punctuation CFPathSymbols counts in a path: a
// class above ClassSpace, other than / - _ .
var pathSymbol = func() (t [256]uint8) {
	for c := range t {
		if classOf[c] > ClassSpace && c != '/' && c != '-' && c != '_' && c != '.' {
			t[c] = 1
		}
	}
	return t
}()

// commonMethod reports whether m is one of the methods most services use.
func commonMethod(m string) bool {
	switch m {
	case "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS":
		return true
	}
	return false
}

// contentVector describes a request whose parameters are in s (one
// batch, extracted); the values marked in s.known (an enumerable
// parameter's known values) are normal by the parameter model and are
// counted in the request-level counts only.
//
// With grams (the trigram filter) it also returns the most trigrams the
// filter never saw in any novelWindow consecutive trigrams of one value,
// times the price of one in that value (cost for the path and names, each
// parameter's novelCost for its value). With apart, a path not known is
// read apart and merged, as Workload.finish does for a new route's.
func contentVector(r *Request, s *paramScratch, mask uint32, grams []uint64, shaped, pathKnown, apart bool, cost float64) (ContentVector, float64) {
	var x ContentVector
	s.contentStart(r, mask, grams, pathKnown, apart, cost)
	s.contentBatch(mask, shaped, true)
	if s.pathApart {
		s.content.merge(&s.pathAcc)
	}
	novel := s.contentVectorEnd(&x, mask)
	for f := range x {
		x[f] &= -uint8(mask >> uint(f) & 1) // without a branch
	}
	return x, novel
}

// contentTraining asks scoring for a request's content features rather than
// its content surprise: training describes its sample of requests as
// scoring will, against the section's parameter models, before the
// content model exists. Every path is read.
type contentTraining struct {
	mask   uint32
	shaped bool
	// x receives the request's features.
	x ContentVector
}

// contentStart starts reading a request into the content model: its
// method and path. Its parameters follow a batch at a time (contentBatch);
// contentVectorEnd writes the features.
func (s *paramScratch) contentStart(r *Request, mask uint32, grams []uint64, pathKnown, apart bool, cost float64) {
	a := &s.content
	s.pathApart = false
	var g *[gramWords]uint64
	if len(grams) == gramWords {
		g = (*[gramWords]uint64)(grams)
	}
	a.reset(g)
	a.cost = cost
	if !commonMethod(r.Method) {
		a.method = 1
	}
	path := r.Path
	if len(path) > MaxValueBytes {
		path = path[:MaxValueBytes]
	}
	a.pathLen = len(path)
	if pathKnown {
		// Normal by the route model (see contentPart): its length counts,
		// its bytes need no look, as a known value's.
		a.total += len(path)
		a.maxLen = max(a.maxLen, len(path))
	} else {
		ps := 0
		for i := 0; i < len(path); i++ {
			ps += int(pathSymbol[path[i]])
		}
		a.pathSymbols = ps
		// The path is read like a value, but its slashes are structure, not
		// punctuation: the share of punctuation is measured on values only.
		if apart {
			// Into an accumulator of its own, merged at the end (merge).
			s.pathApart = true
			s.pathAcc.reset(g)
			s.pathAcc.value(view(path), cost)
		} else {
			ratio := a.symRatio
			a.value(view(path), cost)
			a.symRatio = ratio
		}
	}
	a.mask = mask
}

// merge adds p, the path read apart (contentStart), to a, the values: the
// result is what reading the path first into a would have given
// (TestContentVectorMatchesReference reads every case apart too). The
// path's share of punctuation is not taken, as contentStart does not take
// it.
func (a *contentAcc) merge(p *contentAcc) {
	for i := range a.classes {
		for j := range a.classes[i] {
			a.classes[i][j] += p.classes[i][j]
		}
	}
	for k := range a.tokens {
		a.tokens[k] += p.tokens[k]
	}
	a.calls += p.calls
	a.novel = maxf(a.novel, p.novel)
	a.total += p.total
	a.maxLen = max(a.maxLen, p.maxLen)
	a.caseMix += p.caseMix
	a.escapes += p.escapes
	a.encoded += p.encoded
	// Read first, the path stays the longest unless a value is longer.
	if p.longestLen > 0 && p.longestLen >= a.longestLen {
		a.longest, a.longestLen, a.longestPre = p.longest, p.longestLen, -1
	}
}

// contentBatch reads a batch of parameters into the content model. Values
// read from the body are left out when the model was trained on shapes
// (shaped): shapes of bodies have no content to learn. final says no batch
// follows.
func (s *paramScratch) contentBatch(mask uint32, shaped, final bool) {
	a := &s.content
	for i := 0; i < s.n; i++ {
		p := &s.params[i]
		if shaped && p.body {
			continue
		}
		if p.header {
			if !p.cont {
				a.headers++
			}
		} else if !p.cont {
			a.params++
			// Names are input too: payloads hide in them. One the route
			// learned was read in training: its digest is added.
			if p.digest != nil {
				a.addName(p.digest, p.name)
			} else {
				a.value(p.name, a.cost)
			}
		}
		v := p.value
		if s.known&(1<<uint(i)) == 0 {
			a.value(v, p.novelCost)
		} else {
			// Known to be normal: its length counts, its bytes need no look.
			n := min(len(v), MaxValueBytes)
			a.total += n
			a.maxLen = max(a.maxLen, n)
		}
		if p.cont {
			// A window repeats the end of the one before it.
			a.total -= min(len(v), valueOverlap)
		}
		a.maxLen = max(a.maxLen, p.full)
	}
	// The longest value read byte by byte may be a view of this batch's
	// memory, which the next batch reuses: its entropy is measured now,
	// or at the end after the last batch (contentVectorEnd).
	if !final && a.longest != nil {
		a.longestEntropy()
	}
}

// longestEntropy measures the entropy of the longest value read so far,
// when a new one was found (and the model has the feature).
func (a *contentAcc) longestEntropy() {
	if a.longest == nil {
		return
	}
	if a.mask&(1<<CFEntropy) != 0 {
		if a.longestPre >= 0 {
			a.entropy = a.longestPre
		} else {
			a.entropy = a.scratch.entropy2(a.longest)
		}
	}
	a.longest = nil
}

// nameDigest is what contentAcc.value adds for one parameter name made of
// word bytes only (letters, digits, '_': no class count, escape, keyword
// operator or call), worked out once per model (digestName): a request
// naming a parameter its route learned adds it without reading the name
// again. Compiled to WebAssembly, reading a four-byte name and measuring
// its entropy cost the filter more than a microsecond a request. The
// result equals reading the name (TestNameDigestEqualsReadingTheName).
type nameDigest struct {
	ok bool
	// n is the name's length, caseMix its case changes, sym8 its share of
	// punctuation in eighths (0 under four bytes, as value leaves it),
	// entropy its entropy2.
	n, caseMix, sym8, entropy int
	// tokens counts the lexicon's kinds the name is a word of; words says
	// whether any is counted (an array compared with zero is a call to
	// runtime.memequal in wasm).
	tokens [nKwKinds]uint32
	words  bool
	// novel is its densest run of trigrams the filter never saw, priced
	// at the workload's cost (what value keeps in contentAcc.novel).
	novel float64
}

// digestName reads name as contentAcc.value would, with the workload's
// trigram filter and price of a new trigram, into a digest; ok is false
// for a name value reads more of than a digest keeps.
func digestName(name []byte, grams *[gramWords]uint64, cost float64) nameDigest {
	if len(name) == 0 || len(name) > maxNameBytes {
		return nameDigest{}
	}
	var a contentAcc
	a.reset(grams)
	a.value(name, cost)
	if a.classes != [2][NClasses / 2]uint32{} || a.calls != 0 || a.escapes != 0 || a.encoded != 0 {
		return nameDigest{}
	}
	var e entropyScratch
	return nameDigest{ok: true, n: len(name), caseMix: a.caseMix, sym8: a.symRatio,
		entropy: e.entropy2(name), tokens: a.tokens, words: a.tokens != [nKwKinds]uint32{}, novel: a.novel}
}

// addName adds a known name's digest, as value(name) would; name is the
// request's own bytes of it (longest views them, as value's would).
func (a *contentAcc) addName(d *nameDigest, name []byte) {
	a.total += d.n
	if d.n > a.maxLen {
		a.maxLen = d.n
	}
	if d.n > a.longestLen {
		a.longest, a.longestLen, a.longestPre = name, d.n, d.entropy
	}
	a.novel = maxf(a.novel, d.novel)
	a.caseMix += d.caseMix
	if d.sym8 > a.symRatio {
		a.symRatio = d.sym8
	}
	if d.words {
		for k := range d.tokens {
			a.tokens[k] += d.tokens[k]
		}
	}
}

// contentVectorEnd writes the request's features into x (which must be
// zero), leaving the features outside mask unmasked (fit masks them).
func (s *paramScratch) contentVectorEnd(x *ContentVector, mask uint32) float64 {
	a := &s.content
	if a.longest != nil {
		a.longestEntropy()
	}
	x[CFMethod] = uint8(a.method)
	x[CFPathLen] = qlog(a.pathLen)
	x[CFPathSymbols] = qlog(a.pathSymbols)
	x[CFParams] = qlog(a.params)
	x[CFHeaders] = qlog(a.headers)
	x[CFTotalBytes] = qlog(a.total)
	x[CFMaxValueLen] = qlog(a.maxLen)
	x[CFEntropy] = uint8(a.entropy)
	x[CFSymbolRatio] = uint8(a.symRatio)
	x[CFQuotes] = qlog(a.class(ClassQuote))
	x[CFAngles] = qlog(a.class(ClassAngle))
	x[CFParens] = qlog(a.class(ClassParen))
	x[CFSeparators] = qlog(a.class(ClassSemicolon))
	x[CFSymbols] = qlog(a.class(ClassSymbol))
	x[CFControl] = qlog(a.class(ClassControl))
	x[CFHigh] = qlog(a.class(ClassHigh))
	x[CFSpaces] = qlog(a.class(ClassSpace))
	x[CFCaseMix] = qlog(a.caseMix)
	x[CFEncoded] = qlog(a.encoded)
	x[CFEscapes] = qlog(a.escapes)
	x[CFSQL] = qlog(int(a.tokens[kwSQL]))
	x[CFShell] = qlog(int(a.tokens[kwShell]))
	x[CFTraversal] = qlog(int(a.tokens[kwTraversal]))
	x[CFScript] = qlog(int(a.tokens[kwScript]))
	x[CFCode] = qlog(int(a.tokens[kwCode]))
	x[CFCalls] = qlog(a.calls)
	return a.novel
}

// ContentModel is the isolation forest and what turns its depths into
// surprise.
type ContentModel struct {
	// Mask lists the features in use (bit i for feature i).
	Mask uint32
	// Shaped says training saw value shapes (TrainConfig.ShapedValues), as
	// the filter ships them: no bodies, query values cut to
	// maxShapedQueryValue bytes. Scoring then reads what training could:
	// no body, and query values only that far.
	Shaped bool
	// Trees are the isolation trees, each in preorder (see contentNode).
	Trees [][]ContentNode
	// Ref holds the mean isolation depths (×depthScale) of a reference
	// sample of normal requests, ascending: the shallower a request
	// isolates, the rarer among them.
	Ref []uint16
	// Spread is how much shallower than Ref[0] costs one more nat.
	Spread float64
	// High holds, per feature, the value that 1 % of the reference sample
	// exceeded: a feature above it is named as the reason.
	High ContentVector
	// Max holds, per feature, the largest value of the whole sample. Trees
	// split only where the sample varies, so a request beyond every normal
	// one on a feature the sample hardly varies in can land in a deep leaf;
	// the range check sees it.
	Max ContentVector
	// Floor holds, per feature, the sample's median. Features are raised
	// to it before scoring: the content model looks for requests with more
	// of something than typical (longer, more punctuation, more tokens),
	// never for ones with less.
	Floor ContentVector
	// N is the number of requests sampled.
	N int
	// NovelCost is the surprise (nats) of one trigram never seen: -ln of
	// the Good-Turing estimate of meeting a new one (the share of trigrams
	// seen exactly once).
	NovelCost float64
	// Grams is the trigram filter (gramWords words), or nil when training
	// saw shapes, not values.
	Grams []uint64

	// refSurprise[k] is -ln((k+½)/(len(Ref)+1)), the surprise of a depth
	// that k reference depths are at most (see index).
	refSurprise []float32
	// maskBytes is Mask as a byte per feature: 0xFF in use, 0 not.
	maskBytes ContentVector
	// checked says the trees passed validTrees when the model was indexed.
	checked bool
	// id names this indexing of the model in contentMemo (never 0).
	id uint64
}

// raise lifts every feature of x to at least its floor.
func (c *ContentModel) raise(x *ContentVector) {
	for f := range x {
		x[f] = max(x[f], c.Floor[f])
	}
}

// index prepares the model for scoring.
func (c *ContentModel) index() {
	c.id = contentIDs.Add(1)
	c.checked = validTrees(c.Trees)
	for f := range c.maskBytes {
		c.maskBytes[f] = -uint8(c.Mask >> uint(f) & 1)
	}
	n := len(c.Ref)
	c.refSurprise = make([]float32, n+1)
	for k := range c.refSurprise {
		c.refSurprise[k] = float32(-math.Log((float64(k) + 0.5) / (float64(n) + 1)))
	}
}

// ContentNode is one node of an isolation tree. An inner node sends x with
// x[Feature] < Split to the next node (its left child) and the rest to
// Next; a leaf (Feature == leafFeature) holds in Next its depth plus the
// expected depth of the points it still held, ×depthScale.
type ContentNode struct {
	Feature, Split uint8
	Next           uint16
}

const (
	leafFeature = 0xFF
	depthScale  = 256
)

// Forest sizes: trees, points per tree, and the requests sampled to build
// and calibrate the forest.
const (
	contentTrees      = 8
	contentTreeSample = 256
	contentSample     = 2048
	// maxTreeNodes bounds a tree (a full tree of contentTreeSample leaves).
	maxTreeNodes = 2*contentTreeSample - 1
)

// depth returns the mean isolation depth of x, ×depthScale.
//
// It walks only checked trees (validTrees: index() checks a decoded model,
// training checks what it grew), so it reads nodes and features without
// bounds checks, which compiled to WebAssembly cost a fifth of the walk;
// contentSurprise scores nothing with a forest that failed the check.
func (c *ContentModel) depth(x *ContentVector) int {
	if !c.checked {
		panic("models: isolation depth asked of an unchecked forest")
	}
	sum := 0
	xp := unsafe.Pointer(x)
	for _, t := range c.Trees {
		base := unsafe.Pointer(unsafe.SliceData(t))
		i := uintptr(0)
		for {
			n := (*ContentNode)(unsafe.Add(base, i*unsafe.Sizeof(ContentNode{})))
			if n.Feature == leafFeature {
				sum += int(n.Next)
				break
			}
			// Written so the compiler can choose without a branch.
			next := uintptr(n.Next)
			if *(*uint8)(unsafe.Add(xp, n.Feature)) < n.Split {
				next = i + 1
			}
			i = next
		}
	}
	return sum / len(c.Trees)
}

// validTrees reports whether every tree can be walked without a bounds
// check: each inner node names a feature and sends both ways forward inside
// its tree, and the last node is a leaf, so every walk ends at a leaf. The
// decoder refuses anything else; trained trees are so by construction.
func validTrees(trees [][]ContentNode) bool {
	if len(trees) == 0 {
		return false
	}
	for _, t := range trees {
		if len(t) == 0 || t[len(t)-1].Feature != leafFeature {
			return false
		}
		for i, n := range t {
			if n.Feature == leafFeature {
				continue
			}
			if int(n.Feature) >= NContent || int(n.Next) <= i+1 || int(n.Next) >= len(t) {
				return false
			}
		}
	}
	return true
}

// surprise is how rare a depth is among the reference sample's, in nats:
// -log of the share of reference requests that isolated as quickly, and
// beyond the quickest, one more nat per Spread.
func (c *ContentModel) surprise(d int) float64 {
	n := len(c.Ref)
	// The number of reference depths ≤ d, by binary search.
	k, hi := 0, n
	for k < hi {
		mid := int(uint(k+hi) >> 1)
		if int(c.Ref[mid]) <= d {
			k = mid + 1
		} else {
			hi = mid
		}
	}
	s := float64(c.refSurprise[k])
	if k == 0 {
		s += float64(int(c.Ref[0])-d) / c.Spread
	}
	return s
}

// rangeSurprise is the surprise of features beyond the sample's largest
// values: rarer than any of its N requests, and half as likely again for
// every step beyond (a third more on a count's log scale, half a bit of
// entropy, an eighth of a value in punctuation).
func (c *ContentModel) rangeSurprise(x *ContentVector) float64 {
	excess := 0
	for f := range x {
		if d := int(x[f]) - int(c.Max[f]); d > 0 {
			excess += d
		}
	}
	return c.rangeCost(excess)
}

// fit masks x to the model's features and raises them to their floors
// (raise), returning how far they exceed the sample's maxima in all
// (rangeSurprise): one pass instead of three.
//
// It works on eight features at a time in a 64-bit word (SWAR): a loop over
// the features costs about 5 ns per turn compiled to WebAssembly, more than
// the work in it. Every feature and every floor and maximum is below 128
// (maxFeature; the decoder refuses a model beyond it), so a byte's top bit
// is free to hold the outcome of its comparison. fitRef in the tests is the
// feature-by-feature definition.
func (c *ContentModel) fit(x *ContentVector) (excess int) {
	const lanes = NContent / 8 * 8
	sum := uint64(0) // excess per byte, summed in 16-bit lanes
	for i := 0; i < lanes; i += 8 {
		xm := binary.LittleEndian.Uint64(x[i:]) & binary.LittleEndian.Uint64(c.maskBytes[i:])
		v := swarMax(xm, binary.LittleEndian.Uint64(c.Floor[i:]))
		binary.LittleEndian.PutUint64(x[i:], v)
		d := swarExcess(v, binary.LittleEndian.Uint64(c.Max[i:]))
		sum += d&0x00FF00FF00FF00FF + d>>8&0x00FF00FF00FF00FF
	}
	excess = int(sum * 0x0001000100010001 >> 48)
	for f := lanes; f < NContent; f++ {
		v := max(x[f]&c.maskBytes[f], c.Floor[f])
		x[f] = v
		excess += max(int(v)-int(c.Max[f]), 0)
	}
	return excess
}

// maxFeature bounds every content feature, floor, high and maximum (the
// largest, a count's qlog, is 60): fit and reason compare eight at once in
// the low seven bits of each byte.
const maxFeature = 127

// swarHigh has the top bit of every byte set.
const swarHigh = 0x8080808080808080

// swarMax returns, byte by byte, the larger of a and b (every byte < 128).
func swarMax(a, b uint64) uint64 {
	ge := ((a | swarHigh) - b) & swarHigh // top bit set where a ≥ b
	sel := ge >> 7 * 0xFF
	return a&sel | b&^sel
}

// swarExcess returns, byte by byte, a - b where a ≥ b and 0 elsewhere
// (every byte < 128).
func swarExcess(a, b uint64) uint64 {
	e := (a | swarHigh) - b // each byte 0x80 + a - b, no borrow between bytes
	sel := e & swarHigh >> 7 * 0xFF
	return e &^ swarHigh & sel
}

// rangeCost is rangeSurprise of features exceeding the maxima by excess.
func (c *ContentModel) rangeCost(excess int) float64 {
	if excess == 0 {
		return 0
	}
	return math.Log(2*float64(c.N)+2) + math.Ln2*float64(excess)
}

// reason names the feature that drove a content surprise: the one furthest
// above what 1 % of normal requests exceeded, else the content as a whole.
// Eight features at a time find the words with any feature above its high
// (see fit); only those are read feature by feature. reasonRef in the tests
// is the definition.
func (c *ContentModel) reason(x *ContentVector) ReasonCode {
	best, code := 0, ReasonContent
	const lanes = NContent / 8 * 8
	for i := 0; i < lanes; i += 8 {
		if swarExcess(binary.LittleEndian.Uint64(x[i:]), binary.LittleEndian.Uint64(c.High[i:])) == 0 {
			continue
		}
		for f := i; f < i+8; f++ {
			if d := int(x[f]) - int(c.High[f]); d > best {
				best, code = d, ReasonContent+1+ReasonCode(f)
			}
		}
	}
	for f := lanes; f < NContent; f++ {
		if d := int(x[f]) - int(c.High[f]); d > best {
			best, code = d, ReasonContent+1+ReasonCode(f)
		}
	}
	return code
}

// contentAsKnown works out the content part of a request whose path was
// read apart as if its route were known (its path's length counts, its
// bytes need no look: contentStart's pathKnown) into v.asKnown, then
// merges the path in, for the part as scored.
func (w *Workload) contentAsKnown(s *paramScratch, v *Verdict) {
	a := &s.content
	total, maxLen, symbols := a.total, a.maxLen, a.pathSymbols
	a.total += a.pathLen
	a.maxLen = max(a.maxLen, a.pathLen)
	a.pathSymbols = 0
	v.asKnown, v.asKnownCode = w.contentPart(s)
	v.hasAsKnown = true
	a.total, a.maxLen, a.pathSymbols = total, maxLen, symbols
	a.merge(&s.pathAcc)
}

// contentPart completes the content model's reading of a request (see
// contentStart): it returns the request's content part and the reason that
// names it (ReasonContent when it is too weak to be named). Workload.finish
// records it in the verdict.
//
// The path of a known route need not be read (contentStart's pathKnown),
// as a value the parameter model knows is not: the route is known, so
// every literal segment is one training saw, and the template is plain
// (appendTemplate: its variable segments are numbers, hex strings or UUIDs
// — digits, the letters a–f, dashes — which carry no payload). A token
// ({tok}) may hold escapes and separators, and a template cut at
// MaxRouteBytes hides the rest of the path: those paths are read. Most
// requests of a mesh have a known path (an id in a known route), and
// reading the path was the content model's largest cost compiled to
// WebAssembly. Training reads every path, so a known path can only lower
// the features, which scoring raises to their floors anyway.
func (w *Workload) contentPart(s *paramScratch) (float64, ReasonCode) {
	c := w.content
	var x ContentVector
	novel := s.contentVectorEnd(&x, c.Mask)
	excess := c.fit(&x)
	// How rare the request is as a whole (the forest, or beyond the
	// sample's range), plus how densely its character sequences are new
	// (each third of a new trigram priced by its parameter's openness): one
	// part, calibrated as one, since free text raises both at once. The
	// first is a function of the vector alone, remembered (contentMemo).
	e, key := s.memo.slot(c.id, &x)
	whole := e.whole
	if e.model != c.id || e.x != key {
		whole = c.surprise(c.depth(&x))
		if excess > 0 {
			whole = maxf(whole, c.rangeCost(excess))
		}
		e.model, e.x, e.whole = c.id, key, whole
	}
	fresh := novel / 3
	sur := whole + fresh
	if sur <= 0 {
		return 0, ReasonContent
	}
	// The feature that drove it is looked for only when the part will be
	// named (judge): it costs in wasm.
	code := ReasonContent
	if sur >= w.contentNamedAt {
		code = c.reason(&x)
		if fresh > whole {
			code = ReasonContentNovel
		}
	}
	return sur, code
}

// avgDepth is c(n), the average depth of an unsuccessful search in a binary
// search tree of n points: the depth a leaf still holding n points adds.
func avgDepth(n int) float64 {
	if n <= 1 {
		return 0
	}
	if n == 2 {
		return 1
	}
	h := math.Log(float64(n-1)) + 0.5772156649
	return 2*h - 2*float64(n-1)/float64(n)
}

// rng is splitmix64: small, fast and identical everywhere.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9E3779B97F4A7C15
	z := r.s
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}

func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

// trainContent builds the content model from feature vectors of normal
// requests, in a canonical order: even positions build the trees, odd ones
// calibrate (when there are few, all do both).
func trainContent(xs []ContentVector, mask uint32, seed uint64) *ContentModel {
	if len(xs) < 8 {
		return nil
	}
	var build, ref []ContentVector
	if len(xs) >= 256 {
		for i := range xs {
			if i%2 == 0 {
				build = append(build, xs[i])
			} else {
				ref = append(ref, xs[i])
			}
		}
	} else {
		build, ref = xs, xs
	}
	c := &ContentModel{Mask: mask}
	vals := make([]int, len(xs))
	for f := 0; f < NContent; f++ {
		for i := range xs {
			vals[i] = int(xs[i][f])
		}
		sort.Ints(vals)
		c.Floor[f] = uint8(vals[len(vals)/2])
	}
	for i := range build {
		c.raise(&build[i])
	}
	for i := range ref {
		c.raise(&ref[i])
	}
	g := rng{s: seed ^ 0x636f6e74656e74} // "content"
	psi := min(contentTreeSample, len(build))
	limit := bits.Len(uint(psi - 1))
	idx := make([]int, len(build))
	for t := 0; t < contentTrees; t++ {
		for i := range idx {
			idx[i] = i
		}
		// A partial Fisher–Yates shuffle draws psi points without replacement.
		for i := 0; i < psi; i++ {
			j := i + g.intn(len(idx)-i)
			idx[i], idx[j] = idx[j], idx[i]
		}
		var nodes []ContentNode
		nodes = growTree(nodes, build, idx[:psi], 0, limit, mask, &g)
		c.Trees = append(c.Trees, nodes)
	}
	// growTree sends both ways forward and ends every path at a leaf.
	if c.checked = validTrees(c.Trees); !c.checked {
		panic("models: training grew a forest that fails validTrees")
	}
	depths := make([]int, len(ref))
	for i := range ref {
		depths[i] = c.depth(&ref[i])
	}
	sort.Ints(depths)
	c.Ref = make([]uint16, len(depths))
	for i, d := range depths {
		c.Ref[i] = uint16(d)
	}
	c.index()
	// The lower tail taken as exponential: from the quickest reference depth
	// to the tenth percentile the share grows (2k+1)-fold.
	k := len(depths) / 10
	c.Spread = math.Max(float64(depths[k]-depths[0])/math.Log(float64(2*k+1)), depthScale/4)
	c.N = len(xs)
	for i := range xs {
		for f := range c.Max {
			c.Max[f] = max(c.Max[f], xs[i][f])
		}
	}
	for f := 0; f < NContent; f++ {
		vals := make([]int, len(ref))
		for i := range ref {
			vals[i] = int(ref[i][f])
		}
		sort.Ints(vals)
		c.High[f] = uint8(vals[min(len(vals)-1, len(vals)*99/100)])
	}
	return c
}

// growTree appends the isolation tree of the points idx (indexes into xs)
// at the given depth, in preorder, and returns the nodes.
func growTree(nodes []ContentNode, xs []ContentVector, idx []int, depth, limit int, mask uint32, g *rng) []ContentNode {
	leaf := func() []ContentNode {
		d := float64(depth) + avgDepth(len(idx))
		return append(nodes, ContentNode{Feature: leafFeature, Next: uint16(math.Round(d * depthScale))})
	}
	if len(idx) <= 1 || depth >= limit {
		return leaf()
	}
	// The features that still vary among these points.
	var lo, hi ContentVector
	lo = xs[idx[0]]
	hi = lo
	for _, i := range idx[1:] {
		for f := range lo {
			lo[f] = min(lo[f], xs[i][f])
			hi[f] = max(hi[f], xs[i][f])
		}
	}
	var cand [NContent]uint8
	nc := 0
	for f := 0; f < NContent; f++ {
		if mask&(1<<uint(f)) != 0 && hi[f] > lo[f] {
			cand[nc] = uint8(f)
			nc++
		}
	}
	if nc == 0 {
		return leaf()
	}
	f := cand[g.intn(nc)]
	split := lo[f] + 1 + uint8(g.intn(int(hi[f]-lo[f])))
	// Partition: x[f] < split to the left.
	left := make([]int, 0, len(idx))
	right := make([]int, 0, len(idx))
	for _, i := range idx {
		if xs[i][f] < split {
			left = append(left, i)
		} else {
			right = append(right, i)
		}
	}
	at := len(nodes)
	nodes = append(nodes, ContentNode{Feature: f, Split: split})
	nodes = growTree(nodes, xs, left, depth+1, limit, mask, g)
	nodes[at].Next = uint16(len(nodes))
	return growTree(nodes, xs, right, depth+1, limit, mask, g)
}

// sampleContent keeps r in the content sample if its hash is among the
// contentSample smallest seen (a bottom-k sample).
func (t *Trainer) sampleContent(r *Request) {
	h := t.lastHash
	if len(t.contentSample) >= contentSample && h >= t.contentSample[contentSample-1].hash {
		return
	}
	t.contentSample = append(t.contentSample, sampledRequest{hash: h, req: cloneRequest(r)})
	if len(t.contentSample) >= 2*contentSample {
		t.trimContentSample()
	}
}

// trimContentSample sorts the sample by hash and keeps the smallest.
func (t *Trainer) trimContentSample() {
	sort.Slice(t.contentSample, func(a, b int) bool { return t.contentSample[a].hash < t.contentSample[b].hash })
	if len(t.contentSample) > contentSample {
		clear(t.contentSample[contentSample:])
		t.contentSample = t.contentSample[:contentSample]
	}
}

// contentMask is the features the content model uses.
func (t *Trainer) contentMask() uint32 {
	mask := uint32(allFeatures)
	if t.cfg.ShapedValues {
		mask &^= shapedMask
	}
	return mask
}

// vectorize describes the sampled requests to w's workload as scoring will
// (against w, with the values its parameter models know by enumeration left
// out) and lets go of the requests: once a workload is finished its part is
// final, so its requests' vectors are too.
func (t *Trainer) vectorize(w *Workload) {
	var s Scratch
	tc := contentTraining{mask: t.contentMask(), shaped: t.cfg.ShapedValues}
	s.params.training = &tc
	for i := range t.contentSample {
		e := &t.contentSample[i]
		if e.vectorized || e.req.Destination != w.Name {
			continue
		}
		req := e.req
		req.Status, req.ResponseBytes = 0, 0
		var v Verdict
		w.measure(&req, &s, &v)
		e.vec = tc.x
		e.vectorized, e.req = true, Request{}
	}
}

// buildContent trains the content model on the sample's vectors (every
// workload finished, so every sampled request vectorized).
func (t *Trainer) buildContent() *ContentModel {
	t.trimContentSample()
	xs := make([]ContentVector, 0, len(t.contentSample))
	for i := range t.contentSample {
		if e := &t.contentSample[i]; e.vectorized {
			xs = append(xs, e.vec)
		}
	}
	c := trainContent(xs, t.contentMask(), t.cfg.Seed)
	if c != nil {
		c.Shaped = t.cfg.ShapedValues
	}
	if c != nil && t.grams != nil {
		c.Grams = t.grams.filter()
		c.NovelCost = t.grams.novelCost()
	}
	return c
}

// The content model's encoding, after the workloads: a presence byte (0:
// none, 1: present, 3: present and reading no bodies), then the feature mask, the trees (node count, then per node feature,
// split and next), the reference depths (count, then ascending as deltas),
// the spread and the per-feature highs.

func appendContent(p []byte, c *ContentModel) []byte {
	if c == nil {
		return append(p, 0)
	}
	flags := byte(1)
	if c.Shaped {
		flags = 3
	}
	p = append(p, flags)
	p = binary.AppendUvarint(p, uint64(c.Mask))
	p = binary.AppendUvarint(p, uint64(len(c.Trees)))
	for _, t := range c.Trees {
		p = binary.AppendUvarint(p, uint64(len(t)))
		for _, n := range t {
			p = append(p, n.Feature, n.Split)
			p = binary.AppendUvarint(p, uint64(n.Next))
		}
	}
	p = binary.AppendUvarint(p, uint64(len(c.Ref)))
	prev := uint16(0)
	for _, r := range c.Ref {
		p = binary.AppendUvarint(p, uint64(r-prev))
		prev = r
	}
	p = appendFloat(p, c.Spread)
	p = binary.AppendUvarint(p, uint64(c.N))
	p = append(p, c.High[:]...)
	p = append(p, c.Max[:]...)
	p = append(p, c.Floor[:]...)
	p = appendFloat(p, c.NovelCost)
	p = binary.AppendUvarint(p, uint64(len(c.Grams)))
	for _, w := range c.Grams {
		p = binary.LittleEndian.AppendUint64(p, w)
	}
	return p
}

// maxLeafDepth bounds a leaf's value: the deepest leaf of a tree of
// contentTreeSample points plus the expected depth of all of them, with room.
const maxLeafDepth = 64 * depthScale

// content decodes the content section, checking that every tree is a
// well-formed preorder tree over known features, so scoring cannot index
// outside it or loop.
func (d *decoder) content() *ContentModel {
	if d.err != nil {
		return nil
	}
	if d.off >= len(d.b) {
		d.fail("content", "truncated presence byte")
		return nil
	}
	present := d.b[d.off]
	d.off++
	switch present {
	case 0:
		return nil
	case 1, 3:
	default:
		d.fail("content", "presence byte %d, want 0, 1 or 3 (without bodies)", present)
		return nil
	}
	c := &ContentModel{Shaped: present == 3}
	mask := d.uvarint("content mask")
	if d.err == nil && (mask == 0 || mask > allFeatures) {
		d.fail("content mask", "%#x names no feature or unknown ones", mask)
		return nil
	}
	c.Mask = uint32(mask)
	nt := d.count("content trees", 4)
	if d.err != nil {
		return nil
	}
	if nt == 0 || nt > 4*contentTrees {
		d.fail("content trees", "%d trees, want 1 to %d", nt, 4*contentTrees)
		return nil
	}
	c.Trees = make([][]ContentNode, nt)
	for t := range c.Trees {
		ctx := fmt.Sprintf("content tree %d", t)
		nn := d.count(ctx+" nodes", 3)
		if d.err != nil {
			return nil
		}
		if nn == 0 || nn > maxTreeNodes {
			d.fail(ctx, "%d nodes, want 1 to %d", nn, maxTreeNodes)
			return nil
		}
		nodes := make([]ContentNode, nn)
		for i := range nodes {
			if d.err != nil || len(d.b)-d.off < 2 {
				d.fail(ctx, "truncated node %d", i)
				return nil
			}
			n := ContentNode{Feature: d.b[d.off], Split: d.b[d.off+1]}
			d.off += 2
			next := d.uvarint(ctx + " node next")
			if d.err != nil {
				return nil
			}
			switch {
			case n.Feature == leafFeature:
				if next > maxLeafDepth || n.Split != 0 {
					d.fail(ctx, "leaf %d: depth %d or split %d invalid", i, next, n.Split)
					return nil
				}
			case int(n.Feature) >= NContent || c.Mask&(1<<n.Feature) == 0 || n.Split == 0:
				d.fail(ctx, "node %d: feature %d or split %d invalid", i, n.Feature, n.Split)
				return nil
			case next <= uint64(i+1) || next >= uint64(nn) || i+1 >= nn:
				// Both children must lie after the node and inside the tree:
				// every step moves forward, so scoring ends at a leaf.
				d.fail(ctx, "node %d: right child %d outside (%d,%d)", i, next, i+1, nn)
				return nil
			}
			n.Next = uint16(next)
			nodes[i] = n
		}
		if nodes[nn-1].Feature != leafFeature {
			d.fail(ctx, "last node is not a leaf")
			return nil
		}
		c.Trees[t] = nodes
	}
	nr := d.count("content reference", 1)
	if d.err != nil {
		return nil
	}
	if nr == 0 {
		d.fail("content reference", "empty")
		return nil
	}
	c.Ref = make([]uint16, nr)
	var prev uint64
	for i := range c.Ref {
		prev += d.uvarint("content reference depth")
		if d.err == nil && prev > maxLeafDepth {
			d.fail("content reference depth", "%d beyond %d", prev, maxLeafDepth)
			return nil
		}
		c.Ref[i] = uint16(prev)
	}
	c.Spread = d.float("content spread")
	if d.err == nil && !(c.Spread > 0) {
		d.fail("content spread", "%v is not positive", c.Spread)
		return nil
	}
	n := d.uvarint("content sample size")
	if d.err == nil && (n < uint64(len(c.Ref)) || n > 1<<20) {
		d.fail("content sample size", "%d for %d reference depths", n, len(c.Ref))
		return nil
	}
	c.N = int(n)
	if d.err == nil && len(d.b)-d.off < 3*NContent {
		d.fail("content highs, maxima and floors", "truncated")
		return nil
	}
	if d.err != nil {
		return nil
	}
	copy(c.High[:], d.b[d.off:])
	copy(c.Max[:], d.b[d.off+NContent:])
	copy(c.Floor[:], d.b[d.off+2*NContent:])
	d.off += 3 * NContent
	for f := range c.High {
		if c.Max[f] > maxFeature {
			d.fail("content maxima", "feature %d: maximum %d above %d", f, c.Max[f], maxFeature)
			return nil
		}
		if c.Floor[f] > c.High[f] || c.High[f] > c.Max[f] {
			d.fail("content highs, maxima and floors", "feature %d: floor %d, high %d, maximum %d out of order", f, c.Floor[f], c.High[f], c.Max[f])
			return nil
		}
	}
	c.index()
	c.NovelCost = d.float("content novel trigram cost")
	if d.err == nil && c.NovelCost < 0 {
		d.fail("content novel trigram cost", "%v is negative", c.NovelCost)
		return nil
	}
	ng := d.uvarint("content trigram filter")
	if d.err == nil && ng != 0 && ng != gramWords {
		d.fail("content trigram filter", "%d words, want 0 or %d", ng, gramWords)
		return nil
	}
	if d.err == nil && uint64(len(d.b)-d.off) < 8*ng {
		d.fail("content trigram filter", "truncated")
		return nil
	}
	if d.err != nil {
		return nil
	}
	if ng > 0 {
		c.Grams = make([]uint64, ng)
		for i := range c.Grams {
			c.Grams[i] = binary.LittleEndian.Uint64(d.b[d.off:])
			d.off += 8
		}
	}
	return c
}

// contentIDs numbers the content models indexed in this process.
var contentIDs atomic.Uint64

// contentMemo remembers what the forest and the sample's range made of
// the last content vectors a scratch met (the "whole" of contentPart), by
// vector, in memoSlots slots.
//
// Walking the isolation trees and the reference depths reads memory that
// has gone cold between two requests in a proxy (about 0.4 µs of the
// filter's own cost in wasm, hack/profile-wasm.sh). Requests to a workload
// repeat their content vectors (their features are counts and lengths on a
// log scale), so most are answered here. The answer is the
// same either way: a slot is used only for the very vector (all its
// features, after fit) of the very model it was computed for
// (TestContentMemoChangesNoVerdict).
type contentMemo [memoSlots]memoSlot

// memoSlots is contentMemo's size: 64 slots of 48 bytes.
const (
	memoBits  = 6
	memoSlots = 1 << memoBits
)

// slot packs a vector into four words: it has 26 features (a compile
// error here says NContent changed and slot must with it).
const _ = uint(NContent-26) + uint(26-NContent)

type memoSlot struct {
	model uint64    // the content model's id; 0: empty
	x     [4]uint64 // the vector, packed (slot)
	whole float64
}

// slot returns the slot of x and x packed.
func (m *contentMemo) slot(model uint64, x *ContentVector) (*memoSlot, [4]uint64) {
	var k [4]uint64
	k[0] = binary.LittleEndian.Uint64(x[0:])
	k[1] = binary.LittleEndian.Uint64(x[8:])
	k[2] = binary.LittleEndian.Uint64(x[16:])
	k[3] = uint64(binary.LittleEndian.Uint16(x[24:]))
	h := (k[0]*0x9E3779B97F4A7C15 ^ k[1]*0xC2B2AE3D27D4EB4F ^ k[2]*0x165667B19E3779F9 ^ k[3] ^ model) * 0xFF51AFD7ED558CCD
	return &m[h>>(64-memoBits)], k
}
