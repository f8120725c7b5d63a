package models

import "bytes"

// Reading a request as it arrives. A request's parameters (query, headers,
// then the body) are decoded into the scratch a batch at a time: when the
// scratch is full, the batch goes to a sink (scoring, training) and the
// scratch is reused, so a request of any size is read in bounded memory and
// nothing past what fits is left unread. The body is fed chunk by chunk as
// the proxy passes it (Workload.Feed): a parameter split between chunks is
// carried over, a %-escape too. A value longer than valueWindow is read in
// windows that overlap by valueOverlap bytes, each judged as a value of its
// parameter (its length, the whole value's so far), so a payload after a
// long benign run is read like one at the start. Whether a body arrives in
// one chunk or many, the parameters and so the verdict are the same.

// DefaultBodyLimit is how much of a request body is read by default
// (Scratch.BodyLimit): the filter's max_body_bytes default.
const DefaultBodyLimit = 64 << 10

// MaxBodyLimit bounds Scratch.BodyLimit and the filter's max_body_bytes:
// what Envoy buffers of a body by default (per_connection_buffer_limit_bytes).
const MaxBodyLimit = 1 << 20

// Windows of long values, and the longest parameter name read.
const (
	valueWindow  = MaxValueBytes
	valueOverlap = 64
	maxNameBytes = 128
)

// sniffBytes is how much of a body without a content type is read before
// deciding whether it reads as a form (looksLikeForm).
const sniffBytes = 1024

// batchSink judges the parameters in a scratch: a batch of a request's;
// final says no batch follows (the scratch's memory is not reused).
type batchSink interface {
	batch(s *paramScratch, final bool)
}

// begin starts reading a request: its query and headers now, its body as
// it is fed (feed), each batch going to sink (nil: the first batch is kept
// and what does not fit is ignored).
func (s *paramScratch) begin(r *Request, sink batchSink) {
	s.n, s.used, s.known, s.sink, s.marks, s.markKey = 0, 0, 0, sink, r.marked, r.ValueKeyID
	s.kwMarks, s.markShift = r.marked && r.KeywordMarks, 0
	if r.Query != "" {
		s.addQuery(stringBytes(r.Query), false)
	}
	for i := range r.Headers {
		h := &r.Headers[i]
		if maySkipHeader(len(h.Name)) && skipHeader(h.Name) {
			continue
		}
		// Most headers, written out: a call per header costs in wasm.
		if len(h.Name) <= maxNameBytes && len(h.Value) <= valueWindow && (s.n < maxParams || s.makeRoom(0)) {
			s.push(stringBytes(h.Name), stringBytes(h.Value), true, false, false, true, len(h.Value))
			continue
		}
		s.addHeader(stringBytes(h.Name), stringBytes(h.Value))
	}
	s.body.start(r)
}

// feed reads the next chunk of the body.
func (s *paramScratch) feed(chunk []byte) { s.body.feed(s, chunk) }

// finish reads the end of the body (cut: the body goes on past what was
// fed, and its last value is not whole) and hands the last batch to the
// sink.
func (s *paramScratch) finish(cut bool) {
	if m := s.body.mode; m == bodyNone || m == bodyUndecided {
		// No body came (most requests): bodyReader.end without its call.
		s.body.mode, s.body.req = bodyNone, nil
	} else {
		s.body.end(s, cut)
	}
	// Scoring's sink called directly: an interface call is an indirect
	// call in wasm.
	if sc, ok := s.sink.(*scorer); ok {
		sc.batch(s, true)
	} else if s.sink != nil {
		s.sink.batch(s, true)
	}
}

// extract decodes the parameters of a request with its whole body (up to
// DefaultBodyLimit) into the scratch: as many as fit one batch.
func (s *paramScratch) extract(r *Request) {
	s.begin(r, nil)
	b := r.Body
	if len(b) > DefaultBodyLimit {
		b = b[:DefaultBodyLimit]
	}
	s.feed(b)
	s.body.end(s, len(b) < len(r.Body))
}

// room makes sure the scratch can take one more parameter and bytes more
// bytes: it hands a full batch to the sink and starts a new one. Without a
// sink it reports false when they do not fit. It is written so that it is
// inlined (the common case: there is room); makeRoom does the rest.
func (s *paramScratch) room(bytes int) bool {
	return s.n < maxParams && len(s.buf)-s.used >= bytes || s.makeRoom(bytes)
}

// makeRoom is room when the scratch is full.
func (s *paramScratch) makeRoom(bytes int) bool {
	if s.n < maxParams && len(s.buf)-s.used >= bytes {
		return true
	}
	if s.sink == nil {
		return false
	}
	s.sink.batch(s, false)
	s.n, s.used, s.known = 0, 0, 0
	return true
}

// push appends a parameter; the caller has made room.
func (s *paramScratch) push(name, value []byte, header, body, cont, last bool, full int) {
	// Field by field: a composite literal of the struct is a memory.fill
	// and a memory.copy in wasm, per parameter.
	p := &s.params[s.n]
	p.digest, p.hasVD, p.vk, p.kw = nil, false, s.markKey, kwLive
	if s.marks {
		s.pushMarked(p, &value, &full, header, body, cont)
	}
	p.name, p.value, p.header, p.body, p.cont, p.last, p.full = name, value, header, body, cont, last, full
	s.n++
}

// pushMarked reads the marks of a record's value (Request.marked) into p,
// taking them off the value: its keyword mark (a query's or a form's value
// whose record marks keywords) and its digest's (a short value is read in
// one window). The windows after a value's first, past its marks, count
// its length without them.
func (s *paramScratch) pushMarked(p *param, value *[]byte, full *int, header, body, cont bool) {
	switch {
	case cont:
		// The mark spoke for the whole value.
		*full -= s.markShift
		p.kw = 0
		return
	case header, body && s.body.mode != bodyForm:
		// Shapes of headers and of a body that is one value carry no mark.
		s.markShift, p.kw = 0, kwUnknown
		return
	}
	s.markShift, p.kw = 0, kwUnknown
	if s.kwMarks {
		p.kw = 0
	}
	if k, ok := readKeywordMark(*value); ok {
		*value, *full, s.markShift = (*value)[KeywordMarkLen:], *full-KeywordMarkLen, KeywordMarkLen
		if s.kwMarks {
			p.kw = int8(k)
		}
	}
	if d, ok := readDigestMark(*value); ok {
		*value, *full = (*value)[DigestMarkLen:], *full-DigestMarkLen
		s.markShift += DigestMarkLen
		p.vd, p.hasVD = d, true
	}
}

// addHeader appends a header, a long value in windows (views of the value:
// a header needs no decoding).
func (s *paramScratch) addHeader(name, value []byte) {
	if len(name) > maxNameBytes {
		name = name[:maxNameBytes]
	}
	if len(value) <= valueWindow {
		if s.room(0) {
			s.push(name, value, true, false, false, true, len(value))
		}
		return
	}
	for off := 0; ; off += valueWindow - valueOverlap {
		end := min(off+valueWindow, len(value))
		if !s.room(0) {
			return
		}
		s.push(name, value[off:end], true, false, off > 0, end == len(value), end)
		if end == len(value) {
			return
		}
	}
}

// addQuery adds every parameter of a query string or of a form held whole
// in memory (a=1&b=2).
func (s *paramScratch) addQuery(q []byte, body bool) {
	for len(q) > 0 {
		// bytes.IndexByte is assembly that compares a word at a time;
		// compiled to WebAssembly a byte loop costs more.
		pair := q
		if i := bytes.IndexByte(q, '&'); i >= 0 {
			pair, q = q[:i], q[i+1:]
		} else {
			q = q[:0]
		}
		if len(pair) == 0 {
			continue
		}
		name, value := pair, pair[:0]
		if i := bytes.IndexByte(pair, '='); i >= 0 {
			name, value = pair[:i], pair[i+1:]
		}
		if len(name) > maxNameBytes {
			name = name[:maxNameBytes]
		}
		if len(value) <= valueWindow && !needsDecoding(name) && !needsDecoding(value) {
			// Most parameters: views of the query, nothing to decode.
			if !s.room(0) {
				return
			}
			s.push(name, value, false, body, false, true, len(value))
			continue
		}
		if !s.addDecoded(name, value, body) {
			return
		}
	}
}

// addDecoded appends one pair of a query or form, percent-decoding name and
// value ('+' as a space) into the scratch buffer, a long value in windows.
// It reports false when there is no room and no sink to make it.
func (s *paramScratch) addDecoded(name, raw []byte, body bool) bool {
	var overlap [valueOverlap]byte
	no, full := 0, 0
	for first := true; ; first = false {
		if !s.room(maxNameBytes + valueWindow) {
			return false
		}
		start := s.used
		s.used += decodeInto(s.buf[s.used:s.used+maxNameBytes], name, true, nil)
		n := s.buf[start:s.used]
		vstart := s.used
		s.used += copy(s.buf[s.used:], overlap[:no])
		var used int
		s.used += decodeInto(s.buf[s.used:vstart+valueWindow], raw, true, &used)
		raw = raw[used:]
		v := s.buf[vstart:s.used]
		full += len(v) - no
		s.push(n, v, false, body, !first, len(raw) == 0, full)
		if len(raw) == 0 {
			return true
		}
		no = copy(overlap[:], v[len(v)-valueOverlap:])
	}
}

// decodeInto decodes in (whole: an escape at its end is taken as it is)
// into dst while it has room, a '+' as a space when form; it returns the
// bytes written and, in used, the bytes of in read.
func decodeInto(dst, in []byte, form bool, used *int) int {
	w, i := 0, 0
	for ; i < len(in) && w < len(dst); i++ {
		c := in[i]
		switch {
		case c == '+' && form:
			c = ' '
		case c == '%' && i+2 < len(in) && isHex(in[i+1]) && isHex(in[i+2]):
			c = unhex(in[i+1])<<4 | unhex(in[i+2])
			i += 2
		}
		dst[w] = c
		w++
	}
	if used != nil {
		*used = i
	}
	return w
}

func needsDecoding(in []byte) bool {
	for i := 0; i < len(in); i++ {
		if c := in[i]; c == '%' || c == '+' {
			return true
		}
	}
	return false
}

// How a body is read.
const (
	bodyNone    = iota
	bodyForm    // name=value pairs, %-escapes and '+' decoded
	bodyValue   // one value, %-escapes decoded, '+' kept
	bodyRaw     // one value as sent (multipart: its parts are raw)
	bodySniffed // no content type: sniffed, then a form or a value
	bodyUndecided
)

// bodyParam names the body of a request that is not a form.
const bodyParam = "(body)"

// bodyReader reads a body chunk by chunk into parameters: the current
// name, the current window of the current value, an escape split between
// chunks, and the first bytes of a body whose kind is still being sniffed.
type bodyReader struct {
	mode uint8
	// req is the request whose body is read, until its kind is decided.
	req     *Request
	inValue bool
	// name and its length; win and its length: the value's window.
	name    [maxNameBytes]byte
	nameLen int
	win     [valueWindow]byte
	winLen  int
	// pairLen counts the raw bytes of the current pair ("&&" are skipped).
	pairLen int
	// full counts the decoded bytes of the current value; cont says a
	// window of it was emitted.
	full int
	cont bool
	// esc holds a '%' and what followed it, when a chunk ended before the
	// escape did.
	esc  [3]byte
	nesc int
	// sniff holds the first bytes of a body without a content type.
	sniff  [sniffBytes]byte
	nsniff int
	// fromJSON says the body is JSON, read as the form of its fields
	// (JSONFields: js writes the form into jbuf, which is read as a form).
	fromJSON bool
	js       JSONFields
	jbuf     [JSONFieldsChunk]byte
}

// start readies the reader for a request's body, by its content type.
// A body without a content type that reads as a form is taken for one:
// frameworks that sniff will parse it so, and leaving the header out is
// how payloads get past filters that trust it. A body that is not a form
// is one value, its %-escapes decoded: clients and attackers send
// URL-encoded text as JSON, XML, plain text or with no content type, and
// what it decodes to is what an application that decodes it acts on; a
// '+' stays a '+' (a space only in forms). Multipart bodies stay as sent:
// their parts are files and field values sent raw (RFC 7578).
func (b *bodyReader) start(r *Request) {
	// What the body is, is decided when it arrives (most requests have
	// none): looking up the content type costs a walk of the headers.
	b.mode, b.req = bodyUndecided, r
}

// decideMode reads the request's content type.
func (b *bodyReader) decideMode() {
	b.inValue, b.nameLen, b.winLen, b.pairLen, b.full, b.cont, b.nesc, b.nsniff = false, 0, 0, 0, 0, false, 0, 0
	b.fromJSON = false
	ct, hasCT := b.req.Header("content-type")
	switch {
	case hasPrefixFold(ct, "application/x-www-form-urlencoded"), b.req.FormBytes > 0:
		b.mode = bodyForm
	case hasCT && IsJSON(ct):
		b.mode, b.fromJSON = bodyForm, true
		b.js.Reset()
	case !hasCT:
		b.mode = bodySniffed
	case hasPrefixFold(ct, "multipart/"):
		b.mode = bodyRaw
	default:
		b.mode = bodyValue
	}
	if b.mode != bodyForm {
		b.nameLen = copy(b.name[:], bodyParam)
		b.inValue = true
	}
	b.req = nil
}

// feed reads one chunk.
func (b *bodyReader) feed(s *paramScratch, chunk []byte) {
	if len(chunk) == 0 {
		return
	}
	if b.mode == bodyUndecided {
		b.decideMode()
	}
	if b.fromJSON {
		for len(chunk) > 0 {
			out, n := b.js.Feed(b.jbuf[:0], chunk)
			b.read(s, out)
			chunk = chunk[n:]
		}
		return
	}
	if b.mode == bodySniffed {
		n := copy(b.sniff[b.nsniff:], chunk)
		b.nsniff += n
		chunk = chunk[n:]
		if b.nsniff < sniffBytes {
			return
		}
		b.decide(s)
	}
	if len(chunk) > 0 {
		b.read(s, chunk)
	}
}

// decide settles what a sniffed body is and reads what was held.
func (b *bodyReader) decide(s *paramScratch) {
	b.mode = bodyValue
	if looksLikeForm(b.sniff[:b.nsniff]) {
		b.mode = bodyForm
		b.inValue, b.nameLen = false, 0
	}
	b.read(s, b.sniff[:b.nsniff])
}

// end reads what is left: the last pair or value, not whole if cut.
func (b *bodyReader) end(s *paramScratch, cut bool) {
	switch b.mode {
	case bodyNone, bodyUndecided:
		b.mode, b.req = bodyNone, nil
		return
	case bodySniffed:
		if b.nsniff == 0 {
			b.mode = bodyNone
			return
		}
		b.decide(s)
	}
	if b.fromJSON {
		// What an escape the body ended in held, cut or not, as a
		// record's form of the body has it (ShapeBody).
		if out := b.js.End(b.jbuf[:0]); len(out) > 0 {
			b.read(s, out)
		}
		b.fromJSON = false
	}
	if !cut {
		b.flushEscape(s)
	}
	b.nesc = 0
	if b.pairLen > 0 || b.mode != bodyForm && (b.full > 0 || b.winLen > 0) {
		b.emit(s, !cut)
	}
	b.mode = bodyNone
}

// read decodes a chunk.
func (b *bodyReader) read(s *paramScratch, chunk []byte) {
	if b.nesc > 0 {
		chunk = b.resume(s, chunk)
	}
	form, decode := b.mode == bodyForm, b.mode != bodyRaw
	special := &valueSpecial
	if form {
		special = &formSpecial
	}
	if !decode {
		special = &rawSpecial
	}
	for i := 0; i < len(chunk); i++ {
		c := chunk[i]
		if form && !b.inValue && special[c] == 0 {
			// A run of a name's plain bytes at once, to the name's bound:
			// a JSON body's fields can all have long names.
			j := i + 1
			for j < len(chunk) && special[chunk[j]] == 0 {
				j++
			}
			b.nameLen += copy(b.name[b.nameLen:], chunk[i:j])
			b.pairLen += j - i
			i = j - 1
			continue
		}
		if special[c] == 0 && b.inValue {
			// A run of plain value bytes, copied at once: a call per byte
			// costs in wasm, and most of a body is plain.
			j := i + 1
			for j < len(chunk) && special[chunk[j]] == 0 {
				j++
			}
			b.putRun(s, chunk[i:j])
			b.pairLen += j - i
			i = j - 1
			continue
		}
		switch {
		case form && c == '&':
			if b.pairLen > 0 {
				b.emit(s, true)
			}
			b.inValue, b.nameLen, b.pairLen = false, 0, 0
			continue
		case form && c == '=' && !b.inValue:
			b.inValue = true
			b.pairLen++
			continue
		case decode && c == '%':
			if i+2 >= len(chunk) {
				// The escape may go on in the next chunk.
				b.nesc = copy(b.esc[:], chunk[i:])
				return
			}
			if isHex(chunk[i+1]) && isHex(chunk[i+2]) {
				c = unhex(chunk[i+1])<<4 | unhex(chunk[i+2])
				i += 2
				b.pairLen += 2
			}
		case form && c == '+':
			c = ' '
		}
		b.pairLen++
		b.put(s, c)
	}
}

// resume completes an escape a chunk boundary left open with the first
// bytes of the next chunk, and returns the rest of it. An escape whose two
// bytes are not hex digits is a '%' as sent, and the bytes after it are
// read as any others.
func (b *bodyReader) resume(s *paramScratch, chunk []byte) []byte {
	n := copy(b.esc[b.nesc:], chunk)
	b.nesc += n
	chunk = chunk[n:]
	if b.nesc < len(b.esc) {
		return chunk // still open: the chunk was one byte
	}
	b.nesc = 0
	if isHex(b.esc[1]) && isHex(b.esc[2]) {
		b.pairLen += 3
		b.put(s, unhex(b.esc[1])<<4|unhex(b.esc[2]))
		return chunk
	}
	after := b.esc
	b.pairLen++
	b.put(s, '%')
	b.read(s, after[1:])
	return chunk
}

// flushEscape settles an escape left open at the end of the body: a '%'
// with fewer than two bytes after it is taken as sent.
func (b *bodyReader) flushEscape(s *paramScratch) {
	for b.nesc > 0 {
		after, n := b.esc, b.nesc
		b.nesc = 0
		b.pairLen++
		b.put(s, '%')
		b.read(s, after[1:n])
	}
}

// The bytes read treats specially, per kind of body: '&', '=', '%' and '+'
// in a form, '%' in a value; none in a raw value.
var formSpecial, valueSpecial, rawSpecial = func() (f, v, r [256]uint8) {
	for _, c := range "&=%+" {
		f[c] = 1
	}
	v['%'] = 1
	return f, v, r
}()

// putRun appends plain value bytes to the value's window, handing full
// windows on.
func (b *bodyReader) putRun(s *paramScratch, run []byte) {
	for len(run) > 0 {
		if b.winLen == valueWindow {
			b.emit(s, false)
		}
		n := copy(b.win[b.winLen:], run)
		b.winLen += n
		b.full += n
		run = run[n:]
	}
}

// put appends a decoded byte to the name or the value's window, handing a
// full window on first.
func (b *bodyReader) put(s *paramScratch, c byte) {
	if !b.inValue {
		if b.nameLen < maxNameBytes {
			b.name[b.nameLen] = c
			b.nameLen++
		}
		return
	}
	if b.winLen == valueWindow {
		b.emit(s, false)
	}
	b.win[b.winLen] = c
	b.winLen++
	b.full++
}

// emit hands the current value's window on as a parameter; last says the
// value ends with it. A window that does not end the value keeps its last
// valueOverlap bytes to start the next.
func (b *bodyReader) emit(s *paramScratch, last bool) {
	// Without a sink (extract), what does not fit is left out.
	if s.room(b.nameLen + b.winLen) {
		start := s.used
		s.used += copy(s.buf[s.used:], b.name[:b.nameLen])
		name := s.buf[start:s.used]
		vstart := s.used
		s.used += copy(s.buf[s.used:], b.win[:b.winLen])
		s.push(name, s.buf[vstart:s.used], false, true, b.cont, last, b.full)
	}
	if last || b.winLen < valueWindow {
		// The value ends here (or the body was cut in it: see end).
		b.winLen, b.full, b.cont = 0, 0, false
		return
	}
	b.winLen = copy(b.win[:], b.win[b.winLen-valueOverlap:b.winLen])
	b.cont = true
}
