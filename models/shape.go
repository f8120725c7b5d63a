package models

import (
	"math/bits"
	"strings"
)

// Value shapes: a value with each byte replaced by a representative of its
// character class, length kept. The filter ships shapes instead of values,
// so the trainer can learn class transitions and lengths (TrainConfig.
// ShapedValues) without the content leaving the sidecar.

// classRepresentative is the byte each character class is shaped as: a
// member of the class.
var classRepresentative = [NClasses]byte{
	ClassLower: 'a', ClassUpper: 'A', ClassDigit: '0', ClassSpace: ' ',
	ClassQuote: '\'', ClassAngle: '<', ClassParen: '(', ClassSlash: '/',
	ClassDot: '.', ClassComma: ',', ClassDash: '-', ClassEquals: '=',
	ClassSemicolon: ';', ClassSymbol: '!', ClassControl: 0x01, ClassHigh: 0x80,
}

// maxShapedQueryValue bounds a query or form value's shape. Scoring reads a
// value whole (a window at a time) and judges its whole length, so the
// shape must be as long for the model the control plane trains on shapes
// to have learned the same lengths and windows: at 1 KiB, a query token of
// 1.5-3 KiB made 93 % of normal requests look too long through meshward
// run. A record stays bounded by the request (at most three bytes of shape
// per byte) and by the collector's bounds.
const maxShapedQueryValue = MaxShippedHeaderValue

// ShapeValue shapes a value, up to MaxValueBytes (one window of what the
// model examines): an exception's shape, an enumerated shape. A record
// carries longer shapes (AppendShapeHeader, ShapeQuery, ShapeBody).
func ShapeValue(v string) string {
	return string(AppendShapeValue(make([]byte, 0, min(len(v), MaxValueBytes)), v))
}

// AppendShapeValue appends ShapeValue(v) to dst.
func AppendShapeValue(dst []byte, v string) []byte { return appendShape(dst, v, MaxValueBytes) }

// AppendShapeHeader appends the shape of a header value as a record
// carries it: up to MaxShippedHeaderValue bytes. Scoring reads a header
// value whole (a window at a time), so its shape must be as long for the
// trainer to learn the same lengths: a browser's cookie often passes 1 KiB.
func AppendShapeHeader(dst []byte, v string) []byte {
	return appendShape(dst, v, MaxShippedHeaderValue)
}

func appendShape[T string | []byte](dst []byte, v T, limit int) []byte {
	n := min(len(v), limit)
	for i := 0; i < n; i++ {
		dst = append(dst, classRepresentative[classOf[v[i]]])
	}
	return dst
}

// ShapeQuery keeps a raw query's parameter names and replaces every value by
// the shape of its decoded bytes, re-encoded so that decoding it yields the
// shape, after the value's keyword mark when it had keywords (see
// Request.KeywordMarks). A mark takes three bytes and needs a keyword of
// at least one, so a shape stays within three bytes per byte of the query.
func ShapeQuery(q string) string {
	if q == "" {
		return ""
	}
	return string(AppendShapeQuery(make([]byte, 0, len(q)), q))
}

// AppendShapeQuery appends ShapeQuery(q) to dst.
func AppendShapeQuery(dst []byte, q string) []byte { return appendShapeQuery(dst, q, nil) }

// AppendShapeQueryDigest is AppendShapeQuery with each value of at most
// MaxDigestedValue bytes (decoded) preceded by the mark of its digest under
// key (see ValueKey); without a key, AppendShapeQuery.
func AppendShapeQueryDigest(dst []byte, q string, key *ValueKey) []byte {
	if !key.Set() {
		key = nil
	}
	return appendShapeQuery(dst, q, key)
}

func appendShapeQuery(dst []byte, q string, key *ValueKey) []byte {
	out := dst
	inValue := false
	n, marks := 0, 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '&':
			inValue, n = false, 0
			out = append(out, c)
			continue
		case c == '=' && !inValue:
			inValue = true
			out = append(out, c)
			k := key
			if marks == MaxDigestMarks {
				k = nil
			}
			var marked bool
			if out, marked = appendValueMarks(out, q[i+1:], k); marked {
				marks++
			}
			continue
		case !inValue:
			out = append(out, c)
			continue
		}
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(q) && isHex(q[i+1]) && isHex(q[i+2]):
			c = unhex(q[i+1])<<4 | unhex(q[i+2])
			i += 2
		}
		if n == maxShapedQueryValue {
			continue
		}
		n++
		out = appendEncodedShapeByte(out, classRepresentative[classOf[c]])
	}
	return out
}

// appendValueMarks appends the marks of the value raw starts with (up to
// its '&'), decoded once as scoring decodes a form value (decodeInto): its
// keyword mark when it has keywords (counted in its first
// maxShapedQueryValue bytes, what the record carries of it), then, under
// key (nil: none), its digest's mark when it is short enough to be
// digested. It reports whether it appended a digest mark.
func appendValueMarks(dst []byte, raw string, key *ValueKey) ([]byte, bool) {
	if i := strings.IndexByte(raw, '&'); i >= 0 {
		raw = raw[:i]
	}
	v := stringBytes(raw)
	if len(v) > maxShapedQueryValue || needsDecoding(v) {
		var buf [maxShapedQueryValue]byte
		v = buf[:decodeInto(buf[:], v, true, nil)]
	}
	if k := countKeywords(v); k > 0 {
		dst = appendKeywordMark(dst, k)
	}
	if key == nil || len(v) > MaxDigestedValue {
		return dst, false
	}
	return appendDigestMark(dst, key.Digest(v)), true
}

// appendEncodedShapeByte appends a shape's byte as a query or form value
// carries it: a letter, digit, '-' or '.' as it is, any other %-escaped
// (so a shape never holds a bare '*', see BodyTail).
func appendEncodedShapeByte(dst []byte, r byte) []byte {
	if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
		return append(dst, r)
	}
	const hex = "0123456789ABCDEF"
	return append(dst, '%', hex[r>>4], hex[r&15])
}

// What a filter ships of a request's headers (see ShapeRequest).
const (
	// MaxShippedHeaders bounds the headers a record carries: as many as
	// the collector takes. Scoring reads every header the model reads (in
	// batches), so a header a record left out would be a new header name
	// to every request that has it: at 16, a browser's requests through
	// Istio (sec-ch-ua, sec-fetch-*, ...) all scored as new parameters.
	MaxShippedHeaders = 64
	// MaxShippedHeaderValue bounds a header value's shape in a record
	// (AppendShapeHeader): the collector's bound.
	MaxShippedHeaderValue = 4 << 10
	// MaxShippedContentType bounds a content type shipped as it is.
	MaxShippedContentType = 128
	// MaxRecordedQuery bounds the query a record carries the shape of
	// (RecordedQuery): the filter's default header inspection limit
	// (max_header_bytes, :path included).
	MaxRecordedQuery = 64 << 10
	// MaxShippedQuery bounds a record's query: the shape of a query of
	// MaxRecordedQuery bytes, three bytes for a symbol (a keyword mark keeps
	// a value within them, but for the last value's byte, see ShapeQuery),
	// with its digest marks.
	MaxShippedQuery = 3*MaxRecordedQuery + MaxDigestMarks*DigestMarkLen + KeywordMarkLen
)

// RecordedQuery is the part of a raw query a record carries the shape of:
// all of it, or, past MaxRecordedQuery bytes (a filter configured to read
// more headers than by default), its whole pairs within them; cut says
// pairs were left out. A record carries what fits rather than none: the
// collector refuses a record past its bounds, and with it the request's
// edge, route and status.
func RecordedQuery(q string) (recorded string, cut bool) {
	if len(q) <= MaxRecordedQuery {
		return q, false
	}
	i := strings.LastIndexByte(q[:MaxRecordedQuery+1], '&')
	return q[:max(i, 0)], true
}

// shippedAsIs is the header whose value a record carries as it is, not its
// shape (up to MaxShippedContentType bytes): it names a format, not data.
const shippedAsIs = "content-type"

// ShapeBody is the shape of a request's body as a filter ships it, read as
// the model reads a body (bodyReader), so that the trainer finds in the
// shape the parameters scoring finds in the body: a form keeps its
// parameter names with shaped values (ShapeQuery); a multipart body is
// shaped as sent; any other body is one value, shaped once its %-escapes
// are decoded. A body without a content type is a form when its first
// sniffBytes read as one (looksLikeForm), as scoring decides.
//
// A record carries the shape of the body's first MaxBodyPrefix bytes, and
// what lies past them (up to DefaultBodyLimit) in short, as a filter reads
// it (see BodyTail).
func ShapeBody(r *Request) []byte { return ShapeBodyDigest(r, nil) }

// ShapeBodyDigest is ShapeBody with the digests of a form's short values
// under key (AppendShapeQueryDigest), those in its first MaxBodyPrefix
// bytes.
func ShapeBodyDigest(r *Request, key *ValueKey) []byte {
	b, _ := shapeBody(r, key)
	return b
}

// shapeBody is ShapeBodyDigest, with the record's FormBytes (r's, or the
// length of its JSON body's form of its fields).
func shapeBody(r *Request, key *ValueKey) ([]byte, int64) {
	if jsonBody(r) {
		// The form of its fields, as scoring reads it.
		b := r.Body[:min(len(r.Body), DefaultBodyLimit)]
		f := *r
		f.Body = AppendJSONFields(make([]byte, 0, len(b)+len(b)/2), b)
		cut := len(b) < len(r.Body)
		f.FormBytes = formBytes(len(f.Body), cut)
		return shapeBodyAsSent(&f, key, cut), f.FormBytes
	}
	return shapeBodyAsSent(r, key, false), r.FormBytes
}

// shapeBodyAsSent is shapeBody of a body that is not JSON (or is already
// the form of a JSON body's fields); cut says the body went on past it.
func shapeBodyAsSent(r *Request, key *ValueKey, cut bool) []byte {
	if len(r.Body) > MaxBodyPrefix || cut {
		var t BodyTail
		prefix := r.Body[:min(len(r.Body), MaxBodyPrefix)]
		t.Start(r, prefix, DefaultBodyLimit)
		t.Feed(r.Body[len(prefix):])
		if cut {
			t.Cut()
		}
		return AppendShapeBody(nil, r, &t, key)
	}
	b := r.Body
	ct, hasCT := r.Header("content-type")
	switch {
	case r.FormBytes > 0, hasPrefixFold(ct, "application/x-www-form-urlencoded"), !hasCT && looksLikeForm(b[:min(len(b), sniffBytes)]):
		return AppendShapeQueryDigest(make([]byte, 0, len(b)), string(b), key)
	case hasPrefixFold(ct, "multipart/"):
		return appendShape(make([]byte, 0, len(b)), b, MaxBodyPrefix)
	}
	// One case reads otherwise: a body without a content type, printable
	// and without spaces, whose '%' ('%' and '=' are one class) makes its
	// shape read as a form where the body did not.
	return appendShapeUnescaped(make([]byte, 0, len(b)), b)
}

// appendShapeUnescaped appends the shape of b with its %-escapes decoded
// ('+' kept), as a body that is not a form is read.
func appendShapeUnescaped(dst, b []byte) []byte {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '%' && i+2 < len(b) && isHex(b[i+1]) && isHex(b[i+2]) {
			c = unhex(b[i+1])<<4 | unhex(b[i+2])
			i += 2
		}
		dst = append(dst, shapeByte(c))
	}
	return dst
}

// ShapeRequest returns the request the control plane's trainer learns from
// when a filter ships r (TrainConfig.ShapedValues): the route template for
// the path, shapes for the query, body and header values (a content type
// kept as it is: it names a format, not data), at most MaxShippedHeaders of
// the headers the model reads. The filter writes the same record as JSON
// (filter/plugin's encodeRecord; its tests hold the two together); offline
// evaluation uses this to measure the model a mesh actually runs.
func ShapeRequest(r *Request) Request { return ShapeRequestDigest(r, nil) }

// ShapeRequestDigest is ShapeRequest as a filter with value key key ships
// r: its short query and form values with their digests (see ValueKey).
func ShapeRequestDigest(r *Request, key *ValueKey) Request {
	s := Request{Method: r.Method, Path: Template(r.Path), Source: r.Source, Destination: r.Destination,
		Status: r.Status, RequestBytes: max(r.RequestBytes, int64(len(r.Body))), ResponseBytes: r.ResponseBytes, ValueKeyID: key.ID(),
		KeywordMarks: true}
	if q, _ := RecordedQuery(r.Query); q != "" {
		s.Query = string(AppendShapeQueryDigest(make([]byte, 0, len(q)), q, key))
	}
	if len(r.Body) > 0 {
		s.Body, s.FormBytes = shapeBody(r, key)
	}
	for _, h := range r.Headers {
		if SkipHeader(h.Name) || len(s.Headers) == MaxShippedHeaders {
			continue
		}
		v := h.Value
		if !(h.Name == shippedAsIs && len(v) <= MaxShippedContentType) {
			v = string(AppendShapeHeader(make([]byte, 0, min(len(v), MaxShippedHeaderValue)), v))
		}
		s.Headers = append(s.Headers, Header{Name: h.Name, Value: v})
	}
	return s
}

// shapeByte is what a value's byte becomes in its shape.
func shapeByte(c byte) byte { return classRepresentative[classOf[c]] }

// isShape reports whether s is a shape: every byte its class's
// representative (shaping it again changes nothing).
func isShape(s string) bool {
	for i := 0; i < len(s); i++ {
		if shapeByte(s[i]) != s[i] {
			return false
		}
	}
	return true
}

// hashShape is hashBytes(h, shape of v) without writing the shape out: how
// a parameter whose enumerated values are shapes (ParamModel.ShapeEnum)
// looks a scored value up.
func hashShape(h uint64, v []byte) uint64 {
	n := uint64(len(v))
	for len(v) >= 8 {
		var w uint64
		for i := 7; i >= 0; i-- {
			w = w<<8 | uint64(shapeByte(v[i]))
		}
		h = bits.RotateLeft64(h^w*hashK1, 31) * hashK2
		v = v[8:]
	}
	var tail uint64
	for i := len(v) - 1; i >= 0; i-- {
		tail = tail<<8 | uint64(shapeByte(v[i]))
	}
	return mixHash(h, tail, n)
}

// sameShape reports whether shape is the shape of v.
func sameShape(shape string, v []byte) bool {
	if len(shape) != len(v) {
		return false
	}
	for i := range v {
		if shape[i] != shapeByte(v[i]) {
			return false
		}
	}
	return true
}
