package models

import "strings"

// JSON bodies. A body whose content type names JSON (application/json,
// application/<anything>+json) is read as the form of its fields
// (JSONFields): each scalar (a string, a number, true, false, null) is a
// field named by the path that leads to it, from the root '$', its keys
// each after a '.', "[]" for an array's elements:
//
//	{"user":{"name":"ann","roles":["a","b"]},"items":[{"id":7}]}
//	$.user.name=ann&$.user.roles[]=a&$.user.roles[]=b&$.items[].id=7
//
// So a JSON API's fields are parameters as a form's are: a field the route
// never had is a new name, an enumerated field's new value a new value, an
// injection in one field is that field's, not lost in one long value. The
// root keeps a JSON field apart from a query or form parameter of the same
// name: they are different inputs, each with its own values. A
// string is read decoded: its escapes (\u ones as UTF-8), then its
// %-escapes, as a body that is one value is; '&', '=' and '+' are
// %-escaped in the form, which would read them otherwise. The
// form is what scoring reads and what a filter's record carries (shaped,
// Request.FormBytes), so the model the control plane trains reads the
// same parameters.
//
// A body that stops being JSON (a byte no JSON has there: a bare word
// that is not a number, true, false or null, a key without quotes), nests
// deeper than maxJSONDepth or names more than maxNameAmplification allows
// is read from there on as one value named bodyParam, as a body that is
// not a form is: what follows is still read, and a route whose bodies were
// JSON meets a parameter it never had.
// Objects and arrays that hold no scalar add no field; a JSON text may be
// followed by others (JSON lines).

// maxJSONDepth bounds the nesting read as JSON.
const maxJSONDepth = 32

// jsonReserve is the room Feed keeps in its output for one byte's worth
// of output: a field's start ('&', its name %-escaped, '=') is the most.
const jsonReserve = 3*maxNameBytes + 16

// JSONFieldsChunk is the output size that JSONFields.Feed is best given:
// a multiple of what one input byte can write (jsonReserve).
const JSONFieldsChunk = 2 << 10

// The states of a JSON body's reading.
const (
	jsValue  = iota // a value is expected
	jsKey           // a key or '}' is expected
	jsKeyStr        // in a key
	jsColon         // after a key: ':' is expected
	jsStr           // in a string value
	jsBare          // in a number, true, false or null
	jsAfter         // after a value: ',' or a closing bracket is expected
	jsBroken        // not JSON: the rest is one value
)

// JSONFields reads a JSON body chunk by chunk, in bounded memory, and
// writes the form of its fields (see above). Reset readies it.
type JSONFields struct {
	state uint8
	// esc is where a string's escape is: 0 none, 1 after the '\', 2–5 at
	// a \u's hex digits (code holds those read); key says the string is a
	// key.
	esc  uint8
	code uint16
	key  bool
	// depth is how deep the reading is; arrays has a bit set for each
	// level that is an array; lens holds each level's name length (the
	// container's own name).
	depth  int
	arrays uint64
	lens   [maxJSONDepth + 1]uint8
	// path is the current name; pathLen its length.
	path    [maxNameBytes]byte
	pathLen int
	// fields says a field was written (the next starts with '&').
	fields bool
	// read counts the body's bytes read before this Feed's chunk, at the
	// byte a value starts (pos); names the bytes of the fields' names
	// written (see maxNameAmplification).
	read, pos, names int
}

// maxNameAmplification bounds the bytes of names a JSON body's form holds
// per byte of the body (past the first 4 KiB): each scalar repeats its
// whole path, so an array of numbers under a long path would make every
// other byte of the body a parameter with a name of 128 bytes, and
// reading those names costs far more than the body's bytes. A body that
// would pass it is read from there on as one value (bodyParam): nothing
// goes unread, and its route meets a name it never had. A legitimate
// API's bodies pass it only with arrays of short scalars under paths
// over four times their length, and read so every time.
const maxNameAmplification = 4

// Reset readies j for another body.
func (j *JSONFields) Reset() {
	j.state, j.esc, j.code, j.key, j.depth, j.arrays, j.fields = jsValue, 0, 0, false, 0, 0, false
	j.path[0], j.pathLen = '$', 1
	j.read, j.pos, j.names = 0, 0, 0
}

// IsJSON reports whether a content type names JSON: application/json or a
// structured syntax suffix (application/problem+json), parameters aside.
func IsJSON(contentType string) bool {
	if len(contentType) == len("application/json") && hasPrefixFold(contentType, "application/json") {
		return true // the most common, without the search
	}
	ct := contentType
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	slash := strings.IndexByte(ct, '/')
	if slash < 0 {
		return false
	}
	sub := ct[slash+1:]
	return len(sub) >= 4 && strings.EqualFold(sub[len(sub)-4:], "json") &&
		(len(sub) == 4 || sub[len(sub)-5] == '+')
}

// jsonBody reports whether r's body is read as JSON: its content type
// names JSON, and it is not already the form of a JSON body's fields (a
// record's, Request.FormBytes).
func jsonBody(r *Request) bool {
	if r.FormBytes > 0 {
		return false
	}
	ct, ok := r.Header("content-type")
	return ok && IsJSON(ct)
}

// formBytes is a record's FormBytes for a form of n bytes, cut says the
// body was read only in part: past MaxBodyPrefix, so that the record is
// read with its marks, and as cut (BodyTail).
func formBytes(n int, cut bool) int64 {
	if cut {
		n = max(n, MaxBodyPrefix+1)
	}
	return int64(max(n, 1))
}

// The bytes written as they are, a run at a time: jsonPlain those of a
// string (not its end or an escape), formPlain those of a broken body's
// rest, jsonBareRun those of a number or literal; none is a byte the form
// would read otherwise ('&', '=', '+').
var jsonPlain, formPlain, jsonBareRun = func() (str, rest, bare [256]bool) {
	for c := range str {
		str[c], rest[c] = true, true
	}
	for _, c := range "&=+" {
		str[c], rest[c] = false, false
	}
	str['"'], str['\\'] = false, false
	for _, c := range "0123456789-.eEtruefalsn" {
		bare[c] = true
	}
	return str, rest, bare
}()

// appendRun appends the run of chunk[i:] whose bytes plain marks, as far
// as dst's room above jsonReserve allows (at least one byte), and returns
// where the run stopped.
func appendRun(dst, chunk []byte, i int, plain *[256]bool) ([]byte, int) {
	end := i + min(len(chunk)-i, cap(dst)-len(dst)-jsonReserve+1)
	k := i
	for k < end && plain[chunk[k]] {
		k++
	}
	return append(dst, chunk[i:k]...), k
}

// jsonBareEnd marks the bytes that end a number, true, false or null;
// jsonBare the bytes one can hold, jsonBareStart those it can start with.
// Any other byte is not JSON: a payload sent as a JSON body is read as
// the one value it is, not split at its spaces into bare words.
var jsonBareEnd, jsonBare, jsonBareStart = func() (end, in, start [256]bool) {
	for _, c := range " \t\r\n,:{}[]\"" {
		end[c] = true
	}
	for _, c := range "0123456789-+.eEtruefalsn" {
		in[c] = true
	}
	for _, c := range "0123456789-tfn" {
		start[c] = true
	}
	return end, in, start
}()

func jsonSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Feed reads chunk and appends the form it makes to dst, stopping when dst
// has less than jsonReserve bytes of room: it returns dst and how much of
// chunk was read. Give it the rest, with room made. dst needs a capacity
// above jsonReserve (JSONFieldsChunk).
func (j *JSONFields) Feed(dst, chunk []byte) ([]byte, int) {
	i := 0
	for i < len(chunk) && cap(dst)-len(dst) >= jsonReserve {
		c := chunk[i]
		switch j.state {
		case jsStr:
			if j.esc == 0 && jsonPlain[c] {
				// A run of plain bytes at once: most of a string.
				dst, i = appendRun(dst, chunk, i, &jsonPlain)
				continue
			}
			dst = j.str(dst, c)
		case jsKeyStr:
			if j.esc == 0 && c != '"' && c != '\\' {
				// A key's run of plain bytes at once, to the name's bound.
				k := i
				for k < len(chunk) && chunk[k] != '"' && chunk[k] != '\\' {
					k++
				}
				j.pathLen += copy(j.path[j.pathLen:], chunk[i:k])
				i = k
				continue
			}
			dst = j.str(dst, c)
		case jsBroken:
			if formPlain[c] {
				dst, i = appendRun(dst, chunk, i, &formPlain)
				continue
			}
			dst = appendFormByte(dst, c)
		case jsBare:
			switch {
			case jsonBareEnd[c]:
				j.state = jsAfter
				continue // read c again, after the value
			case jsonBareRun[c]:
				// A run of a number's bytes at once ('+' is escaped).
				dst, i = appendRun(dst, chunk, i, &jsonBareRun)
				continue
			case jsonBare[c]:
				dst = appendFormByte(dst, c)
			default:
				dst = j.broken(dst, c)
			}
		case jsValue:
			j.pos = j.read + i
			dst = j.value(dst, c)
		case jsKey:
			switch {
			case jsonSpace(c):
			case c == '"':
				j.pathLen = int(j.lens[j.depth])
				if j.pathLen > 0 && j.pathLen < len(j.path) {
					j.path[j.pathLen] = '.'
					j.pathLen++
				}
				j.state, j.key = jsKeyStr, true
			case c == '}':
				j.pop()
			default:
				dst = j.broken(dst, c)
			}
		case jsColon:
			switch {
			case jsonSpace(c):
			case c == ':':
				j.state = jsValue
			default:
				dst = j.broken(dst, c)
			}
		case jsAfter:
			switch {
			case jsonSpace(c):
			case c == ',' && j.depth > 0:
				if j.arrays>>j.depth&1 != 0 {
					j.state = jsValue
				} else {
					j.state = jsKey
				}
			case c == '}' && j.depth > 0 && j.arrays>>j.depth&1 == 0,
				c == ']' && j.depth > 0 && j.arrays>>j.depth&1 != 0:
				j.pop()
			case j.depth == 0 && c != ',' && c != ':' && c != '}' && c != ']':
				// Another JSON text after the first.
				j.state = jsValue
				continue
			default:
				dst = j.broken(dst, c)
			}
		}
		i++
	}
	j.read += i
	return dst, i
}

// value reads c where a value is expected.
func (j *JSONFields) value(dst []byte, c byte) []byte {
	switch {
	case jsonSpace(c):
	case c == '{' || c == '[':
		if j.depth == maxJSONDepth {
			return j.broken(dst, c)
		}
		j.depth++
		j.lens[j.depth] = uint8(j.pathLen)
		if c == '[' {
			j.arrays |= 1 << j.depth
			j.pathLen += copy(j.path[j.pathLen:], "[]")
		} else {
			j.arrays &^= 1 << j.depth
			j.state = jsKey
		}
	case c == ']' && j.depth > 0 && j.arrays>>j.depth&1 != 0:
		// An empty array, or a ',' before its end.
		j.pop()
	case j.names+j.pathLen > maxNameAmplification*j.pos+MaxBodyPrefix:
		return j.broken(dst, c)
	case c == '"':
		dst = j.startField(dst)
		j.state, j.key = jsStr, false
	case jsonBareStart[c]:
		dst = j.startField(dst)
		j.state = jsBare
		dst = appendFormByte(dst, c)
	default:
		return j.broken(dst, c)
	}
	return dst
}

// pop ends the current object or array.
func (j *JSONFields) pop() {
	j.pathLen = int(j.lens[j.depth])
	j.depth--
	j.state = jsAfter
}

// startField writes a field's name and '='.
func (j *JSONFields) startField(dst []byte) []byte {
	if j.fields {
		dst = append(dst, '&')
	}
	j.fields = true
	j.names += j.pathLen
	for _, c := range j.path[:j.pathLen] {
		dst = appendFormByte(dst, c)
	}
	return append(dst, '=')
}

// broken reads the rest of the body, from c, as one value.
func (j *JSONFields) broken(dst []byte, c byte) []byte {
	if j.fields {
		dst = append(dst, '&')
	}
	j.fields = true
	dst = append(dst, bodyParam+"="...)
	j.state = jsBroken
	return appendFormByte(dst, c)
}

// str reads c in a string: a key's bytes go to the name, a value's to dst.
func (j *JSONFields) str(dst []byte, c byte) []byte {
	switch j.esc {
	case 0:
		switch c {
		case '"':
			if j.key {
				j.state = jsColon
			} else {
				j.state = jsAfter
			}
		case '\\':
			j.esc = 1
		default:
			dst = j.put(dst, c)
		}
	case 1:
		j.esc = 0
		switch c {
		case 'u':
			j.esc, j.code = 2, 0
		case 'b':
			dst = j.put(dst, '\b')
		case 'f':
			dst = j.put(dst, '\f')
		case 'n':
			dst = j.put(dst, '\n')
		case 'r':
			dst = j.put(dst, '\r')
		case 't':
			dst = j.put(dst, '\t')
		case '"', '\\', '/':
			dst = j.put(dst, c)
		default:
			// Not an escape: read as sent.
			dst = j.put(dst, '\\')
			dst = j.put(dst, c)
		}
	default:
		if !isHex(c) {
			// Not a \u escape: what was read is taken as sent, and c is
			// read afresh.
			dst = j.flushEscape(dst)
			return j.str(dst, c)
		}
		j.code = j.code<<4 | uint16(unhex(c))
		j.esc++
		if j.esc == 6 {
			j.esc = 0
			dst = j.putCode(dst, j.code)
		}
	}
	return dst
}

// putCode puts a \u escape's code unit as UTF-8 (a surrogate half as its
// own three bytes).
func (j *JSONFields) putCode(dst []byte, u uint16) []byte {
	switch {
	case u < 0x80:
		return j.put(dst, byte(u))
	case u < 0x800:
		dst = j.put(dst, 0xC0|byte(u>>6))
		return j.put(dst, 0x80|byte(u&0x3F))
	}
	dst = j.put(dst, 0xE0|byte(u>>12))
	dst = j.put(dst, 0x80|byte(u>>6&0x3F))
	return j.put(dst, 0x80|byte(u&0x3F))
}

// flushEscape puts an unfinished escape's bytes as they were sent.
func (j *JSONFields) flushEscape(dst []byte) []byte {
	n := int(j.esc)
	j.esc = 0
	if n == 0 {
		return dst
	}
	dst = j.put(dst, '\\')
	if n == 1 {
		return dst
	}
	dst = j.put(dst, 'u')
	for k := n - 3; k >= 0; k-- {
		dst = j.put(dst, "0123456789abcdef"[j.code>>(4*k)&0xF])
	}
	return dst
}

// put puts one decoded byte of a string: to the name (up to its bound) or
// to the value.
func (j *JSONFields) put(dst []byte, c byte) []byte {
	if j.key {
		if j.pathLen < len(j.path) {
			j.path[j.pathLen] = c
			j.pathLen++
		}
		return dst
	}
	return appendFormByte(dst, c)
}

// End appends what the body's end leaves: an escape it cut short.
func (j *JSONFields) End(dst []byte) []byte {
	if j.state == jsStr || j.state == jsKeyStr {
		dst = j.flushEscape(dst)
	}
	return dst
}

// appendFormByte appends c as a form's name or value holds it: '&', '='
// and '+' %-escaped. A '%' is not: what a JSON body's strings hold is read
// with its %-escapes decoded, as a body that is one value is (clients and
// attackers send URL-encoded text as JSON).
func appendFormByte(dst []byte, c byte) []byte {
	switch c {
	case '&', '=', '+':
		return append(dst, '%', "0123456789ABCDEF"[c>>4], "0123456789ABCDEF"[c&0xF])
	}
	return append(dst, c)
}

// AppendJSONFields appends the form of body's fields (JSONFields), read
// whole.
func AppendJSONFields(dst, body []byte) []byte {
	var j JSONFields
	j.Reset()
	buf := make([]byte, 0, JSONFieldsChunk)
	for len(body) > 0 {
		out, n := j.Feed(buf[:0], body)
		dst = append(dst, out...)
		body = body[n:]
	}
	return append(dst, j.End(buf[:0])...)
}
