package models

import (
	"sort"
)

// Graduated enforcement. A verdict sums what every component found unusual;
// enforce mode denies inline only on what the request itself shows (its
// content and values), never on structural novelty between workloads (a
// new caller, route or edge), which the lateral-movement detector judges
// and fences by policy. A routine release that adds a dependency is new in
// structure and ordinary in content: it must pass. What is set aside is a
// ReasonSet; ScoreSetAside is the verdict's score without it. The filter,
// replay and the control plane all decide through these functions, so a
// preview equals what the sidecar does.

// ReasonSet is a set of reason codes.
type ReasonSet [4]uint64

// Add puts c in the set.
func (s *ReasonSet) Add(c ReasonCode) { s[c>>6] |= 1 << (c & 63) }

// Has reports whether c is in the set.
func (s *ReasonSet) Has(c ReasonCode) bool { return s[c>>6]&(1<<(c&63)) != 0 }

// Union adds every code of o.
func (s *ReasonSet) Union(o *ReasonSet) {
	for i := range s {
		s[i] |= o[i]
	}
}

// Complement returns the codes not in s (among every code, named or not).
func (s *ReasonSet) Complement() ReasonSet {
	var c ReasonSet
	for i := range s {
		c[i] = ^s[i]
	}
	return c
}

// Empty reports whether the set holds nothing.
func (s *ReasonSet) Empty() bool { return s[0]|s[1]|s[2]|s[3] == 0 }

// Names returns the names of the named codes in the set, sorted.
func (s *ReasonSet) Names() []string {
	var out []string
	for _, c := range namedReasons() {
		if s.Has(c) {
			out = append(out, c.String())
		}
	}
	sort.Strings(out)
	return out
}

// Reason groups, by what they say about a request.
var (
	// StructuralReasons are novelty between workloads and in an API's
	// shape: a caller, route, edge or parameter name never seen. A release
	// shows them; the lateral-movement detector judges them.
	// A route_suffix is a new route too: a release that nests a route
	// under a known one shows it as well as a backup-file probe does.
	StructuralReasons = reasonSet(ReasonNewCaller, ReasonNewRoute, ReasonNewEdge, ReasonUnknownDestination, ReasonNewParam, ReasonRouteSuffix)
	// ValueReasons are a parameter's value unlike its training: malformed,
	// oversized, carrying keywords, or an unseen value of an enumeration.
	ValueReasons = reasonSet(ReasonValueShape, ReasonValueLength, ReasonKeywords, ReasonNewValue)
	// ContentReasons are the content model's: the request lexically unlike
	// normal ones (every content_* reason).
	ContentReasons = func() ReasonSet {
		var s ReasonSet
		for c := ReasonContent; c <= ReasonContentNovel; c++ {
			s.Add(c)
		}
		return s
	}()
	// ResponseReasons are known only once the response is: they can never
	// deny a request, which is answered by then.
	ResponseReasons = reasonSet(ReasonStatus, ReasonResponseSize)
)

// SizeReasons are a request body far larger than its route's, or larger
// than any it was sent.
var SizeReasons = reasonSet(ReasonRequestSize, ReasonBodyBeyond)

// DefaultDenyReasons is what enforce mode denies on unless configured
// otherwise: the request's content and values (injections, traversal,
// malformed or oversized values) and a body far larger than its route's.
func DefaultDenyReasons() ReasonSet {
	s := ValueReasons
	s.Union(&ContentReasons)
	s.Union(&SizeReasons)
	return s
}

func reasonSet(codes ...ReasonCode) ReasonSet {
	var s ReasonSet
	for _, c := range codes {
		s.Add(c)
	}
	return s
}

// namedReasons lists every code with a name of its own.
func namedReasons() []ReasonCode {
	var out []ReasonCode
	for c := ReasonNewCaller; int(c) < len(reasonNames); c++ {
		out = append(out, c)
	}
	for c := ReasonContent; c <= ReasonContentNovel; c++ {
		out = append(out, c)
	}
	return out
}

// ParseReason returns the code of a reason's name (as String writes it).
func ParseReason(name string) (ReasonCode, bool) {
	for _, c := range namedReasons() {
		if c.String() == name {
			return c, true
		}
	}
	return ReasonNone, false
}

// ReasonNames returns every reason's name, in code order.
func ReasonNames() []string {
	var out []string
	for _, c := range namedReasons() {
		out = append(out, c.String())
	}
	return out
}

// Graduate judges v without the reasons in aside: it returns the score v
// would have without them, as the request phase calibrates it, and the
// strongest reason left (ReasonNone when none is). v must be a
// request-phase verdict by w (scored before any response).
//
// A part is set aside when the reason that names it is (a part is the
// strongest of its signals: the values part, its worst value's reason),
// and the parts left are combined and calibrated as scoring does. A route
// never seen is structural novelty, and so are the words of its path: when
// the route's reason is set aside and the path is plain words (letters,
// digits, dashes, single dots: nothing that can hide escapes or traversal),
// the content part is the one scoring worked out with the path taken as
// known, as a known route's is judged (Verdict.asKnown: the request is
// not read again, so a body of any length, which the filter read as it
// passed, is judged whole).
func (w *Workload) Graduate(v *Verdict, aside *ReasonSet) (float64, ReasonCode) {
	u := *v
	if u.Parts[PartRoute] > 0 && aside.Has(u.Codes[PartRoute]) && u.Parts[PartContent] > 0 && v.hasAsKnown {
		u.Parts[PartContent], u.Codes[PartContent] = v.asKnown, v.asKnownCode
	}
	for p := range u.Parts {
		if u.Parts[p] > 0 && aside.Has(u.Codes[p]) {
			u.Parts[p] = 0
		}
	}
	w.judge(&u, false)
	best := ReasonNone
	if u.NReason > 0 {
		best = u.Reasons[0].Code
	}
	return u.Score, best
}

// wordsOnly reports whether a path is made of words alone — letters,
// digits, '-', '_', single dots and slashes — with nothing that escapes,
// quotes or climbs (%, .., …): the path of a new API route, not a payload.
func wordsOnly(path string) bool {
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '/' || c == '-' || c == '_':
		case c == '.' && (i+1 == len(path) || path[i+1] != '.'):
		default:
			return false
		}
	}
	return true
}

// ScoreSetAside is Graduate's score.
func (w *Workload) ScoreSetAside(v *Verdict, aside *ReasonSet) float64 {
	score, _ := w.Graduate(v, aside)
	return score
}

// ValueEvidence returns the parameter whose value drove v's value reason —
// the value least like its parameter's, as scoring judged it — with its
// name, its value and whether it is a header; ok is false when the request
// has none. The slices view s, valid until s scores again. It is asked only
// of a flagged request whose value reason an exception might cover.
func (w *Workload) ValueEvidence(r *Request, s *Scratch) (name, value []byte, header, ok bool) {
	at, _ := w.valueEvidence(r, s)
	if at < 0 {
		return nil, nil, false, false
	}
	p := &s.params.params[at]
	return p.name, p.value, p.header, true
}

// valueEvidence returns the index in s of the parameter whose value is
// least like its parameter's, and that surprise (-1 and 0 when none).
func (w *Workload) valueEvidence(r *Request, s *Scratch) (int, float64) {
	if len(w.Params) == 0 {
		return -1, 0
	}
	ps := &s.params
	tmpl, _ := appendTemplate(ps.route[:0], r.Path)
	ri, routeKnown := w.routeOf(r.Method, tmpl)
	ps.extract(r)
	worst, at := 0.0, -1
	// As paramSurprise judges each parameter (TestValueEvidenceAgrees
	// keeps the two in step).
	for i := 0; i < ps.n; i++ {
		p := &ps.params[i]
		pm := w.paramOf(p, ri, routeKnown)
		if pm == nil {
			if w.anyParam < 0 {
				continue
			}
			pm = &w.Params[w.anyParam]
		}
		whole := p.last && !p.cont
		if len(pm.Enum) > 0 && !pm.ShapeEnum && whole {
			known := false
			if pm.HashEnum {
				known, whole = w.digestKnown(pm, p)
			} else {
				known = pm.knownValue(p.value)
			}
			if known {
				continue
			}
		}
		raw, _ := pm.valueSurprise(p.value, p.full, whole, pm.keywordsOf(p))
		sur := pm.tail(raw)
		if p.header {
			sur *= headerWeight
		}
		if sur > worst {
			worst, at = sur, i
		}
	}
	return at, worst
}

// Knows reports whether the section learned r's caller, route and edge:
// whether it had seen traffic like r before (readiness's coverage).
func (w *Workload) Knows(r *Request) bool {
	var buf [MaxRouteBytes + 8]byte
	tmpl, _ := appendTemplate(buf[:0], r.Path)
	si, srcKnown := w.sourceOf(r.Source)
	ri, routeKnown := w.routeOf(r.Method, tmpl)
	if !srcKnown || !routeKnown {
		return false
	}
	_, ok := w.edgeSet.get(edgeKey(si, ri))
	return ok
}
