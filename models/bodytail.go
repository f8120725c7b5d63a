package models

import (
	"bytes"
	"math"
	"strconv"
	"unsafe"
)

// Long bodies in records. A record carries the shape of a body's first
// MaxBodyPrefix bytes (ShapeBody), while scoring reads a body up to its
// limit: a form's fields past the prefix would be new names to scoring,
// and a long value's length would never be learned. What lies past the
// prefix is read as the body passes (BodyTail) and carried in short:
//
//   - a form: from the pair the prefix ends in, each pair's name as sent,
//     its value's decoded length and the shape of the value's first
//     maxTailShape decoded bytes, written name=*N*shape, up to MaxBodyTail
//     bytes of pairs. The shape is written as ShapeQuery writes one, so it
//     never holds a bare '*': a value that starts with one carries a mark.
//   - any other body: its length as scoring reads it, *N* before the
//     prefix's shape (a shape holds no '*' either).
//
// A trainer on shapes draws a marked value out to its length from its shape
// (Trainer.readable, expandBody), and whoever judges records reads them so
// (AsRead). A body that went past what was read (the body limit) carries no
// mark on its last value: it reads as cut. A pair that does not fit
// MaxBodyTail ends what is carried: the fields after it are left out.

const (
	// MaxBodyTail bounds the pairs past the prefix a record carries.
	MaxBodyTail = 4 << 10
	// maxTailShape bounds a value's shape past the prefix.
	maxTailShape = 256
	// maxTailName bounds a name past the prefix, as sent (escapes
	// included: decoded, it still fills the maxNameBytes scoring reads).
	maxTailName = 3 * maxNameBytes
	// tailMark opens and closes a value's length.
	tailMark = '*'
	// maxMarkDigits bounds a mark's length: MaxBodyLimit has 7.
	maxMarkDigits = 7
)

// MaxShippedBody bounds a record's body: the prefix's shape (three bytes
// for a symbol of a form, keyword marks included, see ShapeQuery) with its
// values' digest marks, the pairs past it and a mark.
const MaxShippedBody = 3*MaxBodyPrefix + MaxDigestMarks*DigestMarkLen + MaxBodyTail + 2 + maxMarkDigits

// BodyTail reads a body past the prefix a record carries, chunk by chunk,
// in bounded memory (the current pair's name and shape, the pairs written
// so far). A filter starts it when a body goes past MaxBodyPrefix and feeds
// it every chunk after; AppendShapeBody writes the record's body. The zero
// value is idle; Reset makes a used one idle again.
type BodyTail struct {
	on   bool
	mode uint8 // bodyForm, bodyValue or bodyRaw
	// limit is how much of the body is read; read how much was; over says
	// more came.
	limit, read int
	over        bool
	// start is where, in the prefix, the pair it ends in starts.
	start int
	// The current pair: its name as sent, its value's decoded length and
	// the shape of its first bytes; inValue says '=' was read; pairLen
	// counts its bytes as sent.
	inValue  bool
	name     [maxTailName]byte
	nameLen  int
	shape    [maxTailShape]byte
	shapeLen int
	full     int
	pairLen  int
	// esc and nesc hold a '%' and the hex digit after it, when the chunk
	// ended before the escape did.
	esc  [2]byte
	nesc int
	// out holds the pairs read to their end; spent says one did not fit.
	out   []byte
	spent bool
	// keep says how Keep keeps the body (keepUndecided until its first
	// chunk); js writes a JSON body's fields into jbuf.
	keep   uint8
	js     JSONFields
	jsRead int
	jbuf   []byte
	// formLen counts the bytes of the form Keep kept.
	formLen int
}

// How Keep keeps a body.
const (
	keepUndecided = iota
	keepAsSent
	keepFields // a JSON body, as the form of its fields
	keepEnded  // a JSON body's, ended (EndKeep)
)

// Reset makes t idle, keeping its buffers.
func (t *BodyTail) Reset() {
	out, jbuf := t.out[:0], t.jbuf
	*t = BodyTail{}
	t.out, t.jbuf = out, jbuf
}

// Used reports whether t read anything since it was last reset.
func (t *BodyTail) Used() bool { return t.on || t.keep != keepUndecided }

// Keep keeps what a filter's record of r carries of the next chunk of its
// body: its first MaxBodyPrefix bytes in r.Body and, when tail is set (a
// record is shipped), what lies past them read by t (Start, Feed; limit is
// the filter's body limit). A JSON body is kept as the form of its fields
// (JSONFields), as scoring reads it, and r.FormBytes says so (and how long
// the form is so far): r's body then reads as that form, to whoever reads
// r again (a policy looking for the value that decided). A scorer fed the
// body must have read each chunk before it is kept: it decides how to
// read the body from r at the first. EndKeep keeps what the end leaves:
// call it once the body has ended, before the record is written.
func (t *BodyTail) Keep(r *Request, chunk []byte, limit int, tail bool) {
	if t.keep == keepUndecided {
		t.keep = keepAsSent
		if jsonBody(r) {
			t.keep = keepFields
			t.js.Reset()
			if t.jbuf == nil {
				t.jbuf = make([]byte, 0, JSONFieldsChunk)
			}
		}
	}
	if t.keep != keepFields {
		t.keepForm(r, chunk, limit, tail)
		return
	}
	// The form can be longer than the body: the body's limit is counted
	// as sent.
	over := len(chunk) > limit-t.jsRead
	if over {
		chunk = chunk[:max(limit-t.jsRead, 0)]
	}
	t.jsRead += len(chunk)
	for len(chunk) > 0 {
		out, n := t.js.Feed(t.jbuf[:0], chunk)
		t.keepForm(r, out, limit, tail)
		chunk = chunk[n:]
	}
	r.FormBytes = formBytes(t.formLen, false)
	if over && tail {
		if !t.on {
			t.Start(r, r.Body, limit)
		}
		t.Cut()
	}
}

// EndKeep keeps what the end of a body Keep kept leaves (an escape a JSON
// body ended in) and marks a JSON body's record as the form of its fields
// (r.FormBytes). Once is enough: it does nothing again until t is reset.
func (t *BodyTail) EndKeep(r *Request, limit int, tail bool) {
	if t.keep == keepFields {
		if out := t.js.End(t.jbuf[:0]); len(out) > 0 {
			t.keepForm(r, out, limit, tail)
		}
		r.FormBytes = formBytes(t.formLen, t.over)
		t.keep = keepEnded
	}
}

// keepForm keeps chunk: in r.Body up to MaxBodyPrefix, past it in t.
func (t *BodyTail) keepForm(r *Request, chunk []byte, limit int, tail bool) {
	t.formLen += len(chunk)
	if room := MaxBodyPrefix - len(r.Body); room > 0 {
		n := min(len(chunk), room)
		r.Body = append(r.Body, chunk[:n]...)
		chunk = chunk[n:]
	}
	if len(chunk) == 0 || !tail {
		return
	}
	if !t.on {
		t.Start(r, r.Body, limit)
	}
	t.Feed(chunk)
}

// Reading reports whether t reads what is fed: it is idle (it will be
// started) or carries more.
func (t *BodyTail) Reading() bool { return !t.on || !t.spent && !t.over }

// Active reports whether t was started.
func (t *BodyTail) Active() bool { return t.on }

// Start begins reading past the prefix: prefix is the body's first
// MaxBodyPrefix bytes, r's content type says what the body is (a body
// without one is sniffed as ShapeBody does), and limit is how much of the
// body is read at most (the scorer's body limit).
func (t *BodyTail) Start(r *Request, prefix []byte, limit int) {
	keep, js, jsRead, formLen := t.keep, t.js, t.jsRead, t.formLen
	t.Reset()
	t.keep, t.js, t.jsRead, t.formLen = keep, js, jsRead, formLen
	t.on, t.limit = true, max(limit, len(prefix))
	fields := r.FormBytes > 0 || keep == keepFields
	ct, hasCT := r.Header("content-type")
	switch {
	case fields, hasPrefixFold(ct, "application/x-www-form-urlencoded"), !hasCT && looksLikeForm(prefix[:min(len(prefix), sniffBytes)]):
		t.mode = bodyForm
		if fields {
			// The form of a JSON body's fields (JSONFields) can be
			// longer than the body: the body's end, or Cut, ends it.
			t.limit = math.MaxInt
		}
		t.start = bytes.LastIndexByte(prefix, '&') + 1
		t.feed(prefix[t.start:])
	case hasPrefixFold(ct, "multipart/"):
		t.mode = bodyRaw
		t.full = len(prefix)
	default:
		t.mode = bodyValue
		t.feed(prefix)
	}
	t.read = len(prefix)
}

// Feed reads the next chunk of the body, up to the limit.
func (t *BodyTail) Feed(chunk []byte) {
	if !t.on || t.spent {
		// Once a pair did not fit, nothing more is carried.
		return
	}
	if room := t.limit - t.read; len(chunk) > room {
		chunk, t.over = chunk[:room], true
	}
	t.read += len(chunk)
	if t.mode == bodyRaw {
		t.full += len(chunk)
		return
	}
	t.feed(chunk)
}

// Cut says the body went on past what was fed (an idle t ignores it).
func (t *BodyTail) Cut() {
	if t.on {
		t.over = true
	}
}

// feed decodes a chunk: a form's pairs, or a value's length.
func (t *BodyTail) feed(chunk []byte) {
	form := t.mode == bodyForm
	special := &valueSpecial
	if form {
		special = &formSpecial
	}
	for i := 0; i < len(chunk) && !t.spent; {
		if form && !t.inValue {
			// A run of a name's bytes at once.
			j := i
			for j < len(chunk) && nameEnd[chunk[j]] == 0 {
				j++
			}
			if j > i {
				n := copy(t.name[t.nameLen:], chunk[i:j])
				t.nameLen += n
				t.pairLen += j - i
				i = j
				continue
			}
		}
		if t.nesc == 0 && (t.inValue || !form) {
			// A run of plain value bytes at once: most of a long body.
			j := i
			for j < len(chunk) && special[chunk[j]] == 0 {
				j++
			}
			if j > i {
				t.putRun(chunk[i:j])
				i = j
				continue
			}
		}
		t.step(chunk[i])
		i++
	}
}

// nameEnd marks the bytes that end a form's name.
var nameEnd = func() (t [256]uint8) {
	t['&'], t['='] = 1, 1
	return t
}()

// putRun reads a run of value bytes that need no decoding.
func (t *BodyTail) putRun(run []byte) {
	t.full += len(run)
	if t.mode != bodyForm {
		return
	}
	t.pairLen += len(run)
	for _, c := range run[:min(len(run), len(t.shape)-t.shapeLen)] {
		t.shape[t.shapeLen] = shapeByte(c)
		t.shapeLen++
	}
}

// step reads one byte as sent.
func (t *BodyTail) step(c byte) {
	form := t.mode == bodyForm
	if form && !t.inValue {
		switch c {
		case '&':
			t.endPair()
			return
		case '=':
			t.inValue = true
		default:
			if t.nameLen < len(t.name) {
				t.name[t.nameLen] = c
				t.nameLen++
			}
		}
		t.pairLen++
		return
	}
	switch {
	case t.nesc == 1 && isHex(c):
		t.esc[1], t.nesc = c, 2
	case t.nesc == 2 && isHex(c):
		t.nesc = 0
		t.put(unhex(t.esc[1])<<4 | unhex(c))
	case t.nesc > 0:
		// Not an escape: what was held is taken as it is, and c is
		// read afresh (it may end the pair or open an escape).
		t.flushEscape()
		t.step(c)
		return
	case c == '%':
		t.esc[0], t.nesc = c, 1
	case c == '&' && form:
		t.endPair()
		return
	case c == '+' && form:
		t.put(' ')
	default:
		t.put(c)
	}
	if form {
		t.pairLen++
	}
}

// flushEscape puts what an unfinished escape held, as it is.
func (t *BodyTail) flushEscape() {
	held := t.esc[:t.nesc]
	t.nesc = 0
	for _, b := range held {
		t.put(b)
	}
}

// put reads one decoded byte of the value.
func (t *BodyTail) put(c byte) {
	t.full++
	if t.mode == bodyForm && t.shapeLen < len(t.shape) {
		t.shape[t.shapeLen] = shapeByte(c)
		t.shapeLen++
	}
}

// endPair writes the current pair, if it fits, and readies the next.
func (t *BodyTail) endPair() {
	if t.nesc > 0 {
		t.flushEscape()
	}
	if t.pairLen > 0 && !t.spent {
		n := len(t.out)
		if n > 0 {
			t.out = append(t.out, '&')
		}
		t.out = t.appendPair(t.out, true)
		if len(t.out) > MaxBodyTail {
			t.out, t.spent = t.out[:n], true
		}
	}
	t.inValue, t.nameLen, t.shapeLen, t.full, t.pairLen = false, 0, 0, 0, 0
}

// appendPair writes the current pair: name=*N*shape, or name=shape when
// its length is not known (the body went on past what was read).
func (t *BodyTail) appendPair(dst []byte, whole bool) []byte {
	dst = append(dst, t.name[:t.nameLen]...)
	dst = append(dst, '=')
	if whole {
		dst = appendMark(dst, t.full)
	}
	return appendShapeEncoded(dst, t.shape[:t.shapeLen])
}

// appendMark writes a value's length as a mark.
func appendMark(dst []byte, n int) []byte {
	dst = append(dst, tailMark)
	dst = strconv.AppendInt(dst, int64(min(n, MaxBodyLimit)), 10)
	return append(dst, tailMark)
}

// appendShapeEncoded writes a shape as a form's value, as ShapeQuery does.
func appendShapeEncoded(dst, shape []byte) []byte {
	for _, r := range shape {
		dst = appendEncodedShapeByte(dst, r)
	}
	return dst
}

// Len is about how many bytes t adds to a record's body.
func (t *BodyTail) Len() int { return len(t.out) + 3*maxTailShape + maxTailName + 16 }

// AppendShapeBody appends the body a record carries of r (its first
// MaxBodyPrefix bytes in r.Body), with what t read past them when t was
// started (see BodyTail), or ShapeBody(r) when it was not; a form's short
// values in the prefix with their digests under key (ShapeBodyDigest).
func AppendShapeBody(dst []byte, r *Request, t *BodyTail, key *ValueKey) []byte {
	if t == nil || !t.on {
		return append(dst, ShapeBodyDigest(r, key)...)
	}
	prefix := r.Body[:min(len(r.Body), MaxBodyPrefix)]
	whole := !t.over
	if dst == nil {
		dst = make([]byte, 0, 3*len(prefix)+t.Len())
	}
	switch t.mode {
	case bodyForm:
		head := prefix[:min(t.start, len(prefix))]
		dst = AppendShapeQueryDigest(dst, unsafe.String(unsafe.SliceData(head), len(head)), key)
		dst = append(dst, t.out...)
		if t.pairLen > 0 && !t.spent {
			// The last pair: whole when the body ended where it was read.
			if whole && t.nesc > 0 {
				t.flushEscape()
			}
			n := len(dst)
			if len(t.out) > 0 {
				dst = append(dst, '&')
			}
			dst = t.appendPair(dst, whole)
			if len(t.out)+len(dst)-n > MaxBodyTail {
				dst = dst[:n]
			}
		}
		return dst
	case bodyRaw:
		if whole {
			dst = appendMark(dst, t.full)
		}
		return appendShape(dst, prefix, MaxBodyPrefix)
	}
	if whole {
		full := t.full
		if t.nesc > 0 {
			full += t.nesc
		}
		dst = appendMark(dst, full)
	}
	return appendShapeUnescaped(dst, prefix)
}

// bodyRead is how long the body of r, a record, was as read: its form's
// length when it carries the form of a JSON body's fields (FormBytes),
// else the body's. Only past MaxBodyPrefix does a record carry the rest
// in short, with marks.
func bodyRead(r *Request) int64 {
	if r.FormBytes > 0 {
		return r.FormBytes
	}
	return r.RequestBytes
}

// readMark reads the mark a value may start with (see BodyTail): the
// length it says and how many bytes it takes; 0 bytes when there is none.
func readMark(v []byte) (n, size int) {
	if len(v) < 3 || v[0] != tailMark {
		return 0, 0
	}
	for i := 1; i < len(v) && i <= maxMarkDigits+1; i++ {
		c := v[i]
		switch {
		case c >= '0' && c <= '9':
			n = n*10 + int(c-'0')
		case c == tailMark && i > 1:
			return min(n, MaxBodyLimit), i + 1
		default:
			return 0, 0
		}
	}
	return 0, 0
}

// AsRead returns a filter's record of a request as scoring read the
// request: a copy whose values' digest marks scoring reads (see
// Request.marked) and, when its body went past the prefix, whose body is
// drawn out to the lengths its marks say (see BodyTail). Whoever judges
// records (the control plane) judges them so; a trainer on shapes reads
// the marks itself (it also learns whether the last value was cut).
func AsRead(r *Request) *Request {
	c := *r
	c.marked = true
	if bodyRead(r) <= MaxBodyPrefix || len(r.Body) == 0 {
		// Only past the prefix does a record carry marks (a JSON body's
		// form of its fields can pass it when the body does not).
		return &c
	}
	c.Body, _ = expandBody(nil, r)
	return &c
}

// expandBody returns the body of r, a record of a model trained on shapes,
// as scoring would have read it: every value a mark gave the length of
// (see BodyTail) is drawn out to that length from its shape (the shape
// repeated). whole says the body's last value was whole: it had a mark. The
// values drawn out come to at most DefaultBodyLimit bytes together (a
// record is a workload's word; a value past that is cut). dst is reused.
func expandBody(dst []byte, r *Request) (body []byte, whole bool) {
	b := r.Body
	budget := DefaultBodyLimit
	ct, hasCT := r.Header("content-type")
	if r.FormBytes == 0 && !hasPrefixFold(ct, "application/x-www-form-urlencoded") && (hasCT || !looksLikeForm(b[:min(len(b), sniffBytes)])) {
		// One value: its shape as it is, after its mark.
		n, size := readMark(b)
		if size == 0 {
			return append(dst, b...), false
		}
		return drawOut(dst, b[size:], n, &budget, false)
	}
	for first := true; len(b) > 0; first = false {
		pair := b
		if i := bytes.IndexByte(b, '&'); i >= 0 {
			pair, b = b[:i], b[i+1:]
		} else {
			b = b[:0]
		}
		if !first {
			dst = append(dst, '&')
		}
		eq := bytes.IndexByte(pair, '=')
		if eq < 0 {
			dst, whole = append(dst, pair...), false
			continue
		}
		dst = append(dst, pair[:eq+1]...)
		v := pair[eq+1:]
		n, size := readMark(v)
		unread := r.KeywordMarks && (size > 0 || len(b) == 0)
		if _, ok := readKeywordMark(v); ok {
			unread = false
		}
		if unread {
			// A value past the prefix (drawn out, or the last, cut):
			// what it held past its first bytes was never read for
			// keywords.
			dst = append(dst, '~', kwUnknownMark, '~')
		}
		if size == 0 {
			dst, whole = append(dst, v...), false
			continue
		}
		dst, whole = drawOut(dst, v[size:], n, &budget, true)
	}
	return dst, whole
}

// drawOut appends n bytes of shape repeated (a form's value: shape is
// %-encoded, and so is what is appended), spending them from budget; whole
// is false when the budget cut it short.
func drawOut(dst, shape []byte, n int, budget *int, form bool) ([]byte, bool) {
	var buf [maxTailShape]byte
	if form {
		k := decodeInto(buf[:], shape, true, nil)
		shape = buf[:k]
	}
	whole := n <= *budget
	n = min(n, *budget)
	if len(shape) == 0 {
		n = 0
	}
	*budget -= n
	for n > 0 {
		part := shape[:min(n, len(shape))]
		if form {
			dst = appendShapeEncoded(dst, part)
		} else {
			dst = append(dst, part...)
		}
		n -= len(part)
	}
	return dst, whole
}
