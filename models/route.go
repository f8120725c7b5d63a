package models

import (
	"bytes"
	"math"
)

// Route templates fold the variable segments of a path into placeholders,
// judged by shape alone, so that /users/42/orders and /users/7/orders are one
// route. Templating appends to a caller-owned buffer and never allocates.

// Placeholders a variable path segment folds into.
const (
	SegNumber = "{num}"
	SegUUID   = "{uuid}"
	SegHex    = "{hex}"
	SegToken  = "{tok}"
	SegVar    = "{var}" // a position the trainer found too varied to enumerate
)

// MaxRouteBytes bounds a route template; longer paths are cut, and the cut is
// marked with a trailing "/…".
const MaxRouteBytes = 256

// AppendTemplate appends the route template of path to dst.
func AppendTemplate(dst []byte, path string) []byte {
	dst, _ = appendTemplate(dst, path)
	return dst
}

// appendTemplate is AppendTemplate, also reporting whether the template is
// plain: cut nowhere, and with no token placeholder ({tok}, which can stand
// for escapes and separators), so that its path holds nothing but the
// template's literal segments and numbers, hex strings or UUIDs (see
// Workload.contentSurprise).
func appendTemplate(dst []byte, path string) ([]byte, bool) {
	start := len(dst)
	plain := true
	if path == "" || path[0] != '/' {
		dst = append(dst, '/')
	}
	i := 0
	for i < len(path) {
		if len(dst)-start >= MaxRouteBytes {
			dst = append(dst[:start+MaxRouteBytes], "/…"...)
			plain = false
			break
		}
		if path[i] == '/' {
			dst = append(dst, '/')
			i++
			continue
		}
		j := i
		for j < len(path) && path[j] != '/' {
			j++
		}
		seg := path[i:j]
		if ph := segmentShape(seg); ph != "" {
			dst = append(dst, ph...)
			plain = plain && ph != SegToken
		} else {
			dst = append(dst, seg...)
		}
		i = j
	}
	if len(dst)-start > MaxRouteBytes+len("/…") {
		dst = append(dst[:start+MaxRouteBytes], "/…"...)
		plain = false
	}
	return dst, plain
}

// Template returns the route template of path.
func Template(path string) string {
	var buf [MaxRouteBytes + 8]byte
	return string(AppendTemplate(buf[:0], path))
}

// segmentShape returns the placeholder for a variable-looking segment, or ""
// for a segment that reads as a literal word.
//
// It counts characters by table (segmentCounts, segmentFlags) rather than
// by a chain of range tests per character: compiled to WebAssembly, two
// table loads cost less than the several compares and branches a letter
// went through.
func segmentShape(s string) string {
	n := len(s)
	if n == 0 || n > 0xffff {
		// Longer segments would overflow the 16-bit counters.
		return segmentShapeLong(s)
	}
	var counts uint64
	var flags uint8
	for i := 0; i < n; i++ {
		c := s[i]
		counts += segmentCounts[c]
		flags |= segmentFlags[c]
	}
	if flags&segOtherChar != 0 {
		return ""
	}
	digits, hexLetters := int(counts&0xffff), int(counts>>16&0xffff)
	dashes, other := int(counts>>32&0xffff), int(counts>>48)
	// The shapes of segmentShapeLong, which explains them; repeated rather
	// than shared, as a call per segment would cost more than the switch
	// (TestSegmentShapeTable holds the two to the same answers).
	switch {
	case digits == n:
		return SegNumber
	case n == 36 && dashes == 4 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' && digits+hexLetters == 32:
		return SegUUID
	case n >= 8 && digits > 0 && digits+hexLetters == n:
		return SegHex
	case n >= 16 && digits > 0 && (flags&(segUpper|segLower) == segUpper|segLower || digits*5 >= n):
		return SegToken
	case n >= 4 && digits > 0 && digits*2 >= n && dashes+other <= 2:
		return SegToken
	}
	return ""
}

// segmentShapeLong is segmentShape for segments of any length, counting
// with full-size integers and range tests: the reference the table-driven
// segmentShape follows.
func segmentShapeLong(s string) string {
	n := len(s)
	if n == 0 {
		return ""
	}
	var digits, hexLetters, upper, lower, other, dashes int
	for i := 0; i < n; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'f':
			hexLetters++
			lower++
		case c >= 'A' && c <= 'F':
			hexLetters++
			upper++
		case c >= 'g' && c <= 'z':
			lower++
		case c >= 'G' && c <= 'Z':
			upper++
		case c == '-':
			dashes++
		case c == '_' || c == '=' || c == '+' || c == '.' || c == '~' || c == '%':
			other++
		default:
			return ""
		}
	}
	switch {
	case digits == n:
		return SegNumber
	case n == 36 && dashes == 4 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' && digits+hexLetters == 32:
		return SegUUID
	case n >= 8 && digits > 0 && digits+hexLetters == n:
		return SegHex
	case n >= 16 && digits > 0 && (upper > 0 && lower > 0 || digits*5 >= n):
		// Long mixed tokens (base64-ish ids, hashes, session keys): words
		// this long rarely mix both cases with digits.
		return SegToken
	case n >= 4 && digits > 0 && digits*2 >= n && dashes+other <= 2:
		// Mostly digits with a few letters or separators: order-2024-17, v1x9.
		return SegToken
	}
	return ""
}

// segmentFlags bits: the segment has an upper-case letter, a lower-case
// letter, or a character that makes it a literal word.
const (
	segUpper uint8 = 1 << iota
	segLower
	segOtherChar
)

// segmentCounts[c] adds one to c's 16-bit counter: digits (bits 0–15), hex
// letters (16–31), dashes (32–47), other separators (48–63);
// segmentFlags[c] holds c's segmentFlags bits. Both follow
// segmentShapeLong's classes.
var segmentCounts, segmentFlags = func() (counts [256]uint64, flags [256]uint8) {
	for i := range counts {
		c := byte(i)
		switch {
		case c >= '0' && c <= '9':
			counts[i] = 1
		case c >= 'a' && c <= 'f':
			counts[i], flags[i] = 1<<16, segLower
		case c >= 'A' && c <= 'F':
			counts[i], flags[i] = 1<<16, segUpper
		case c >= 'g' && c <= 'z':
			flags[i] = segLower
		case c >= 'G' && c <= 'Z':
			flags[i] = segUpper
		case c == '-':
			counts[i] = 1 << 32
		case c == '_' || c == '=' || c == '+' || c == '.' || c == '~' || c == '%':
			counts[i] = 1 << 48
		default:
			flags[i] = segOtherChar
		}
	}
	return counts, flags
}()

// Derived routes. A workload's route set is nearly closed, and the new
// routes an application grows are new pages and resources, not a known
// route with something appended: index.php.bak, index.php~, index.old beside
// index.php, /orders/{num}/.git/config below /orders/{num}. Those are how
// backup files, editor leftovers and version-control metadata are probed
// for. An unknown route that extends a known one costs, beyond the new
// route's own Good-Turing price, -ln of the share of the workload's own
// routes that extend another of its routes (plus one, of routes plus two):
// an application whose routes nest (REST resources below collections)
// shows it in training and pays little; one whose routes never do pays
// what its rarity says. No list of suffixes: any extension counts.

// derivedRoutes is the index of a workload's route templates that an
// unknown route is checked against.
type derivedRoutes struct {
	// templates holds every known template (any method); stems the
	// directory and stem (up to the first '.') of every known template
	// whose last segment has an extension, with how many templates share
	// it.
	templates, stems table
	// cost is the price of a derived route (nats).
	cost float64
}

// derivedSeed starts the hashes of derivedRoutes' keys.
const derivedSeed = 0x6465726976656400 // "derived"

// build indexes the routes and prices a derived one.
func (d *derivedRoutes) build(routes []Route) {
	d.templates = newTable(len(routes))
	d.stems = newTable(len(routes))
	seen := map[string]bool{}
	var distinct []string
	for _, r := range routes {
		if seen[r.Template] {
			continue
		}
		seen[r.Template] = true
		distinct = append(distinct, r.Template)
		d.templates.put(hashString(derivedSeed, r.Template), 1)
		if stem, ok := templateStem(stringBytes(r.Template)); ok {
			k := hashBytes(derivedSeed, stem)
			n, _ := d.stems.get(k)
			d.stems.put(k, n+1)
		}
	}
	derived := 0
	for _, t := range distinct {
		if d.extends(stringBytes(t), 2) {
			derived++
		}
	}
	d.cost = -math.Log((float64(derived) + 1) / (float64(len(distinct)) + 2))
}

// surprise returns the price of an unknown route template if it extends a
// known one, else 0. It runs for unknown routes only.
func (d *derivedRoutes) surprise(tmpl []byte) float64 {
	if len(d.templates.slots) == 0 || !d.extends(tmpl, 1) {
		return 0
	}
	return d.cost
}

// extends reports whether tmpl is a known template with something
// appended: more segments below one (not below the root, which every path
// is), or more characters after a punctuation mark in its last segment, or
// the last segment's stem with another extension, shared by at least
// minStem known templates (1 for an unknown route; 2 when tmpl is itself
// known, so that it does not count as derived from itself).
func (d *derivedRoutes) extends(tmpl []byte, minStem uint32) bool {
	last := 0
	for j := 1; j < len(tmpl); j++ {
		c := tmpl[j]
		if c == '/' {
			last = j
		}
		if c == '/' || j > last && c != '{' && c != '}' && classOf[c] > ClassDigit && tmpl[j-1] != '/' {
			if _, ok := d.templates.get(hashBytes(derivedSeed, tmpl[:j])); ok {
				return true
			}
		}
	}
	if stem, ok := templateStem(tmpl); ok {
		if n, _ := d.stems.get(hashBytes(derivedSeed, stem)); n >= minStem {
			return true
		}
	}
	return false
}

// templateStem returns a template up to the first '.' of its last segment,
// when that segment has a stem before it.
func templateStem(tmpl []byte) ([]byte, bool) {
	last := bytes.LastIndexByte(tmpl, '/')
	dot := bytes.IndexByte(tmpl[last+1:], '.')
	if dot <= 0 {
		return nil, false
	}
	return tmpl[:last+1+dot], true
}
