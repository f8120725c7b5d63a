package models

import (
	"math"
	"unsafe"

	"github.com/meshward/meshward/internal/wordeq"
)

// Features that do not depend on a model: how values are split out of a
// request, and the character classes values are described by. Nothing here
// allocates: values are decoded into caller-owned scratch buffers.

// MaxValueBytes bounds how much of one parameter value is examined.
const MaxValueBytes = 1024

// maxParams bounds how many parameters of one request are examined.
const maxParams = 64

// NClasses is the number of character classes. Class NClasses is the
// start-of-value state of the class transition model.
const NClasses = 16

// Character classes: letters and digits are folded, punctuation is kept in
// small groups that mean different things to an interpreter (quotes end
// strings, angle brackets open markup, parentheses call functions, …).
const (
	ClassLower = iota
	ClassUpper
	ClassDigit
	ClassSpace
	ClassQuote      // ' " `
	ClassAngle      // < >
	ClassParen      // ( ) [ ] { }
	ClassSlash      // / \
	ClassDot        // .
	ClassComma      // , :
	ClassDash       // - _ ~ +
	ClassEquals     // = & % ? #
	ClassSemicolon  // ; |
	ClassSymbol     // ! @ $ ^ *
	ClassControl    // < 0x20, 0x7f
	ClassHigh       // ≥ 0x80 (UTF-8 and raw bytes)
	classStartState = NClasses
)

var classOf = func() (t [256]uint8) {
	for i := range t {
		c := byte(i)
		switch {
		case c >= 'a' && c <= 'z':
			t[i] = ClassLower
		case c >= 'A' && c <= 'Z':
			t[i] = ClassUpper
		case c >= '0' && c <= '9':
			t[i] = ClassDigit
		case c == ' ' || c == '\t':
			t[i] = ClassSpace
		case c == '\'' || c == '"' || c == '`':
			t[i] = ClassQuote
		case c == '<' || c == '>':
			t[i] = ClassAngle
		case c == '(' || c == ')' || c == '[' || c == ']' || c == '{' || c == '}':
			t[i] = ClassParen
		case c == '/' || c == '\\':
			t[i] = ClassSlash
		case c == '.':
			t[i] = ClassDot
		case c == ',' || c == ':':
			t[i] = ClassComma
		case c == '-' || c == '_' || c == '~' || c == '+':
			t[i] = ClassDash
		case c == '=' || c == '&' || c == '%' || c == '?' || c == '#':
			t[i] = ClassEquals
		case c == ';' || c == '|':
			t[i] = ClassSemicolon
		case c == '!' || c == '@' || c == '$' || c == '^' || c == '*':
			t[i] = ClassSymbol
		case c < 0x20 || c == 0x7f:
			t[i] = ClassControl
		default:
			t[i] = ClassHigh
		}
	}
	return t
}()

// ClassOf returns the character class of a byte.
func ClassOf(c byte) int { return int(classOf[c]) }

// param is one name=value pair of a request, decoded. Values that need no
// decoding are views of the request's own memory, never written through.
type param struct {
	name, value []byte
	header      bool // a header: name is the header name, without headerPrefix
	body        bool // read from the body
	// cont marks a window of a long value after its first (see
	// valueWindow): the name was counted with the first.
	cont bool
	// full is how many bytes of the value (decoded) were read up to the
	// end of this window: its length, for a value read in one window;
	// last says the value ends with this window.
	full int
	last bool
	// novelCost is the price of a new trigram in the value (see
	// ParamModel.priceNovelty), set when the parameter model judged it.
	novelCost float64
	// digest is what the content model reads of the name, when the
	// parameter model that judged it learned exactly this name (see
	// nameDigest); nil otherwise.
	digest *nameDigest
	// vd is the value's digest a record's mark gave (hasVD; see
	// Request.marked); vk names the key the record's marks were made with
	// (Request.ValueKeyID).
	vd    uint64
	vk    uint32
	hasVD bool
	// kw is the keywords a record's mark says the value had (0 to
	// maxMarkedKeywords; kwUnknown when its record did not say), or kwLive
	// for a request's value, whose keywords are counted.
	kw int8
}

// paramScratch holds decoded parameters of one request. It lives in the
// caller's Scratch so extraction does not allocate.
type paramScratch struct {
	params [maxParams]param
	n      int
	buf    [4096]byte
	used   int
	// known marks (bit i) the parameters whose value the parameter model
	// knew as an enumerated value; the content model skips them.
	known uint64
	// marks says the request's query and form values may carry digest
	// marks (Request.marked), made with the key markKey names.
	marks   bool
	markKey uint32
	// kwMarks says the request is a record that marks keywords
	// (Request.KeywordMarks); markShift is how many bytes of marks came off
	// the first window of the value being read.
	kwMarks   bool
	markShift int
	// sink judges the parameters a batch at a time, when the scratch is
	// full and at the end of the request (see begin); nil keeps the first
	// batch and ignores what does not fit.
	sink batchSink
	// body reads the body as it arrives; scorer is the sink of scoring,
	// kept here so that scoring allocates nothing.
	body   bodyReader
	scorer scorer
	// training, when set, collects content features for training the
	// content model instead of scoring with it.
	training *contentTraining
	// route holds the request's route template while it is scored.
	route [MaxRouteBytes + 8]byte
	// content is the content model's scratch, memo what it remembers
	// between requests.
	content contentAcc
	memo    contentMemo
	// collect, when set (calibration), receives the surprise of every
	// value a parameter model judged.
	collect func(pm *ParamModel, surprise float64)
	// pathKnown has the content model read an unknown route's path as a
	// known one's: nothing in meshward sets it; the tests hold
	// Verdict.asKnown to what scoring gives with it
	// (TestAsKnownIsScoringWithThePathKnown).
	pathKnown bool
	// pathApart says the path of an unknown route went into pathAcc, not
	// content (contentStart): contentAsKnown judges the request both with the
	// path read and with it taken as known, for Graduate.
	pathApart bool
	pathAcc   contentAcc
}

// stringBytes views a string's bytes; callers only read through it.
//
// It assembles the slice header itself rather than calling unsafe.Slice,
// whose length check is a call to math.MulUintptr: a real function call
// compiled to WebAssembly, made for every header and hash of every request.
func stringBytes(s string) []byte {
	return *(*[]byte)(unsafe.Pointer(&bytesHeader{unsafe.StringData(s), len(s), len(s)}))
}

// bytesHeader is the memory layout of a []byte.
type bytesHeader struct {
	data     *byte
	len, cap int
}

// view returns the bytes of a string or byte slice without copying; callers
// only read through it.
func view[T string | []byte](in T) []byte {
	switch v := any(in).(type) {
	case string:
		return stringBytes(v)
	case []byte:
		return v
	}
	return nil
}

// headerPrefix marks header names among a request's parameters.
const headerPrefix = "h:"

// headerKeySeed starts the lookup key of a header's model, so that a header
// and a query parameter of the same name never meet.
const headerKeySeed = 0x6865616465723a00 // "header:"

// modelKey is the key of a stored parameter model (header models are stored
// as AnyRoute with headerPrefix on their name). Workload.paramSurprise looks
// a request's parameters up by the same keys: hashBytes(headerKeySeed, name)
// for a header, paramKey(route, name) otherwise.
func (m *ParamModel) modelKey() uint64 {
	if m.header() {
		return hashString(headerKeySeed, m.Name[len(headerPrefix):])
	}
	return paramKey(m.Route, view(m.Name))
}

// SkipHeader reports whether a header is left out of the model: its value
// carries no request semantics, or the proxy itself sets it.
func SkipHeader(name string) bool { return skipHeader(name) }

// skipLengths has bit n set when skipHeader leaves out a name of n bytes.
const skipLengths = 1<<4 | 1<<10 | 1<<11 | 1<<12 | 1<<14 | 1<<15 | 1<<17 | 1<<21 | 1<<24 | 1<<30

// maySkipHeader reports whether skipHeader can leave out a name of n bytes:
// most headers' lengths (user-agent, accept) say no without the call,
// which costs in wasm.
func maySkipHeader(n int) bool { return n < 64 && skipLengths>>uint(n)&1 != 0 }

// skipHeader lists headers whose values carry no request semantics, or that
// the proxy itself sets.
//
// It is asked of every header of every request, so it compares words, not
// strings: after the length, a name's first and last eight bytes, one load
// each (the names are 10 to 30 bytes long). Compiled to WebAssembly, a
// string comparison is two calls and a byte loop, and a switch over these
// names made about eight of them per request. A name longer than 16 bytes
// whose ends match is confirmed whole (wordeq.Words, also by words).
func skipHeader(name string) bool {
	n := len(name)
	if n == 4 {
		// Host is :authority under its HTTP/1 name, and :authority is
		// left out as every pseudo-header is: Envoy folds Host into it,
		// and captures carry it or not as their tool did, so a model
		// learned without it must not meet it as a new header.
		return name == "host"
	}
	if n < 10 || n > 30 {
		return false
	}
	first, last := word(name, 0), word(name, n-8)
	switch n {
	case 10:
		return ends(first, last, "tracestate")
	case 11:
		return ends(first, last, "x-b3-spanid") || ends(first, last, "traceparent")
	case 12:
		return ends(first, last, "x-request-id") || ends(first, last, "x-b3-traceid") || ends(first, last, "x-b3-sampled")
	case 14:
		return ends(first, last, "content-length")
	case 15:
		return ends(first, last, "x-forwarded-for")
	case 17:
		return ends(first, last, "x-forwarded-proto") && wordeq.Words(name, "x-forwarded-proto") ||
			ends(first, last, "x-b3-parentspanid") && wordeq.Words(name, "x-b3-parentspanid")
	case 21:
		return ends(first, last, "x-envoy-attempt-count") && wordeq.Words(name, "x-envoy-attempt-count") ||
			ends(first, last, "x-envoy-peer-metadata") && wordeq.Words(name, "x-envoy-peer-metadata")
	case 24:
		return ends(first, last, "x-envoy-peer-metadata-id") && wordeq.Words(name, "x-envoy-peer-metadata-id")
	case 30:
		return ends(first, last, "x-envoy-expected-rq-timeout-ms") && wordeq.Words(name, "x-envoy-expected-rq-timeout-ms")
	}
	return false
}

// ends reports whether first and last are the first and last eight bytes of
// lit, a name of the same length as the one they were read from.
func ends(first, last uint64, lit string) bool {
	return first == word(lit, 0) && last == word(lit, len(lit)-8)
}

// word reads the eight bytes of s at i, which the caller keeps within s, in
// one load (byte order does not matter: words are only compared).
func word(s string, i int) uint64 {
	return *(*uint64)(unsafe.Add(unsafe.Pointer(unsafe.StringData(s)), i))
}

// same reports whether a request's bytes b are a, a learned key's: what a
// table's key found is compared with what the request says (sourceOf,
// routeOf, paramOf, a known value), by words in wasm (see wordeq).
func same(a string, b []byte) bool {
	return wordeq.Equal(a, unsafe.String(unsafe.SliceData(b), len(b)))
}

// looksLikeForm reports whether a body reads as name=value pairs: printable,
// no spaces, at least one '='.
func looksLikeForm(b []byte) bool {
	eq := false
	for _, c := range b {
		switch {
		case c == '=':
			eq = true
		case c <= ' ' || c >= 0x7f:
			return false
		}
	}
	return eq
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// Lexical statistics of one value, used in reasons and reports.
type Lexical struct {
	Length   int
	Entropy  float64 // bits per byte
	Classes  [NClasses]uint16
	Encoded  int // %XX sequences still present after one decoding (double encoding)
	Keywords int // interpreter keywords and operators (SQL, shell, script, traversal)
}

// LexicalOf describes a decoded value. It does not allocate.
func LexicalOf(v []byte) Lexical {
	var l Lexical
	l.Length = len(v)
	var hist [256]uint16
	for i, c := range v {
		hist[c]++
		l.Classes[classOf[c]]++
		if c == '%' && i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]) {
			l.Encoded++
		}
	}
	if n := float64(len(v)); n > 0 {
		for _, h := range hist {
			if h > 0 {
				p := float64(h) / n
				l.Entropy -= p * math.Log2(p)
			}
		}
	}
	l.Keywords = countKeywords(v)
	return l
}
