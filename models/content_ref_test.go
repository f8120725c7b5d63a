package models

// The content model's feature extraction as first written, kept as the
// reference the optimised contentVector must match bit for bit
// (TestContentVectorMatchesReference). Unchanged but for names, and for
// new trigrams, which count where they are densest (novelDensest): marked one
// by one, then counted window by window.

// refContentAcc accumulates features over the values of one request.
type refContentAcc struct {
	classes       [NClasses]int
	tokens        [nKwKinds]int
	calls         int
	novel         float64
	grams         *[gramWords]uint64 // the trigram filter, or nil
	total, maxLen int
	// longest is the longest value examined byte by byte.
	longest          []byte
	symRatio         int
	caseMix, escapes int
	encoded          int
}

// value adds one value's bytes to the accumulator.
func (a *refContentAcc) value(v []byte, cost float64) {
	if len(v) > MaxValueBytes {
		v = v[:MaxValueBytes]
	}
	a.total += len(v)
	a.maxLen = max(a.maxLen, len(v))
	if len(v) > len(a.longest) {
		a.longest = v
	}
	sym, caseMix := 0, 0
	// novel marks the trigrams the filter never saw, by their last byte.
	var novel [MaxValueBytes]bool
	var classes [NClasses]int32
	prev := uint32(ClassSpace)
	// The word being read: its length and hash (lexHash), and the trigram
	// ending at the current byte.
	wn := 0
	wh := uint64(lexSeed)
	var g uint32
	grams := a.grams
	for i := 0; i < len(v); i++ {
		c := v[i]
		info := refByteInfo[c]
		if wb := info >> 8 & 0xFF; wb != 0 {
			wh = (wh ^ uint64(wb)) * lexPrime
			wn++
		} else if wn != 0 {
			a.word(wh, wn)
			wn, wh = 0, lexSeed
			// A word called as a function: "concat(", "exec (".
			j := i
			for j < len(v) && (v[j] == ' ' || v[j] == '\t') {
				j++
			}
			if j < len(v) && v[j] == '(' {
				a.calls++
			}
		}
		if grams != nil {
			g = (g<<8 | info>>16) & 0xFFFFFF
			if i >= 2 {
				s := gramSlot(g)
				novel[i] = ^grams[s>>6]>>(s&63)&1 != 0
			}
		}
		cl := info & (NClasses - 1)
		classes[cl]++
		if cl == ClassUpper && prev == ClassLower {
			caseMix++
		}
		prev = cl
		if cl <= ClassDigit {
			continue
		}
		if cl > ClassSpace {
			sym++
		}
		// Spaces and punctuation: escapes and operator keywords.
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
		for _, k := range operatorIndex[c] {
			if hasPrefixFold(v[i:], keywords[k]) {
				a.tokens[keywordKind[k]]++
			}
		}
	}
	for k, n := range classes {
		a.classes[k] += int(n)
	}
	a.caseMix += caseMix
	// The most new trigrams among any novelWindow consecutive ones, counted
	// window by window.
	for end := 2; end < len(v); end++ {
		n := 0
		for i := max(2, end-novelWindow+1); i <= end; i++ {
			if novel[i] {
				n++
			}
		}
		if n > 0 {
			a.novel = max(a.novel, float64(n)*cost)
		}
	}
	if wn != 0 {
		a.word(wh, wn)
	}
	if len(v) >= 4 {
		if r := 8 * sym / len(v); r > a.symRatio {
			a.symRatio = r
		}
	}
}

// word looks one word of a value (its lexHash and length) up in the
// lexicon and counts its kinds.
func (a *refContentAcc) word(h uint64, n int) {
	if n > maxLexWord {
		return
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

// contentVector describes a request whose parameters are in s; the values
// marked in s.known (an enumerable parameter's known values) are normal by
// the parameter model and are counted in the request-level counts only.
//
// With grams (the trigram filter) it also returns the most trigrams the
// filter never saw in any novelWindow consecutive trigrams of one value.
func refContentVector(r *Request, s *paramScratch, mask uint32, grams []uint64, shaped, pathKnown bool, cost float64) (ContentVector, float64) {
	var a refContentAcc
	if len(grams) == gramWords {
		a.grams = (*[gramWords]uint64)(grams)
	}
	var x ContentVector
	if !commonMethod(r.Method) {
		x[CFMethod] = 1
	}
	path := r.Path
	if len(path) > MaxValueBytes {
		path = path[:MaxValueBytes]
	}
	x[CFPathLen] = qlog(len(path))
	if pathKnown {
		// A known path (see contentSurprise) counts its length only.
		a.total += len(path)
		a.maxLen = max(a.maxLen, len(path))
	} else {
		ps := 0
		for i := 0; i < len(path); i++ {
			if c := path[i]; classOf[c] > ClassSpace && c != '/' && c != '-' && c != '_' && c != '.' {
				ps++
			}
		}
		x[CFPathSymbols] = qlog(ps)
		// The path is read like a value, but its slashes are structure, not
		// punctuation: the share of punctuation is measured on values only.
		ratio := a.symRatio
		a.value(view(path), cost)
		a.symRatio = ratio
	}
	params, headers := 0, 0
	for i := 0; i < s.n; i++ {
		p := &s.params[i]
		if shaped && p.body {
			continue
		}
		if p.header {
			if !p.cont {
				headers++
			}
		} else if !p.cont {
			params++
			// Names are input too: payloads hide in them.
			a.value(p.name, cost)
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
			a.total -= min(len(v), valueOverlap)
		}
		a.maxLen = max(a.maxLen, p.full)
	}
	x[CFParams] = qlog(params)
	x[CFHeaders] = qlog(headers)
	x[CFTotalBytes] = qlog(a.total)
	x[CFMaxValueLen] = qlog(a.maxLen)
	if mask&(1<<CFEntropy) != 0 {
		x[CFEntropy] = uint8(refEntropy2(a.longest))
	}
	x[CFSymbolRatio] = uint8(a.symRatio)
	x[CFQuotes] = qlog(a.classes[ClassQuote])
	x[CFAngles] = qlog(a.classes[ClassAngle])
	x[CFParens] = qlog(a.classes[ClassParen])
	x[CFSeparators] = qlog(a.classes[ClassSemicolon])
	x[CFSymbols] = qlog(a.classes[ClassSymbol])
	x[CFControl] = qlog(a.classes[ClassControl])
	x[CFHigh] = qlog(a.classes[ClassHigh])
	x[CFSpaces] = qlog(a.classes[ClassSpace])
	x[CFCaseMix] = qlog(a.caseMix)
	x[CFEncoded] = qlog(a.encoded)
	x[CFEscapes] = qlog(a.escapes)
	x[CFSQL] = qlog(a.tokens[kwSQL])
	x[CFShell] = qlog(a.tokens[kwShell])
	x[CFTraversal] = qlog(a.tokens[kwTraversal])
	x[CFScript] = qlog(a.tokens[kwScript])
	x[CFCode] = qlog(a.tokens[kwCode])
	x[CFCalls] = qlog(a.calls)
	for f := range x {
		if mask&(1<<uint(f)) == 0 {
			x[f] = 0
		}
	}
	return x, a.novel
}

// refByteInfo packs, per byte, its character class (bits 0–7), its word
// byte (8–15, see wordByte) and what trigrams see of it (16–23, see
// gramFold).
var refByteInfo = func() (t [256]uint32) {
	for c := range t {
		t[c] = uint32(classOf[c]) | uint32(wordByte[c])<<8 | uint32(gramFold[c])<<16
	}
	return t
}()

// refEntropy2 returns the byte entropy of v (its first maxEntropyBytes) in
// half bits per byte.
func refEntropy2(v []byte) int {
	if len(v) < 2 {
		return 0
	}
	if len(v) > maxEntropyBytes {
		v = v[:maxEntropyBytes]
	}
	var hist [256]uint16
	for _, c := range v {
		hist[c]++
	}
	// H = log2 n − Σ k·log2 k / n over the byte counts k.
	var sum float32
	for _, c := range v {
		if k := hist[c]; k > 0 {
			sum += klog2k[k]
			hist[c] = 0
		}
	}
	n := len(v)
	return int(2 * (klog2k[n]/float32(n) - sum/float32(n)))
}
