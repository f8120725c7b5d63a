package record

import (
	"encoding/base64"
	"strconv"
	"unicode/utf8"

	"github.com/meshward/meshward/models"
)

// Writing a record. The filter writes one for each request it ships, in the
// sidecar, where encoding/json (reflection), and time and strconv's float
// formatting, are slow compiled to WebAssembly. These appenders write the
// JSON line Record decodes by hand, into the caller's buffer, and allocate
// nothing themselves. A record is written in order:
//
//	b = AppendHead(b, …)        {"ts_ns":…,"route":…,"score":…,"flagged":…[,"model":…][,"sample_rate":…],"request":{
//	b = AppendRequest(b, …)     "Method":…,…,"ResponseBytes":…[,"Body":…][,"ValueKeyID":…][,"KeywordMarks":true][,"FormBytes":…],"Headers":[
//	b = AppendHeader(b, …)      {"Name":…,"Value":…}  (once per header)
//	b = AppendEnd(b)            ]}}

// Version is the pre-encoded part of a record that says what scored it:
// the model's sha256 and the share of unflagged requests shipped. A filter
// encodes it once per configuration (NewVersion).
type Version struct {
	// model is `,"model":"<sha256>"` (empty without a model); rate is
	// `,"sample_rate":<share>` (empty when every request is shipped).
	model, rate []byte
}

// NewVersion encodes a configuration's version fields: modelSHA256 empty
// when no model scores (learn mode), sampleRate ≥ 1 when every request is
// shipped.
func NewVersion(modelSHA256 string, sampleRate float64) Version {
	var v Version
	if modelSHA256 != "" {
		v.model = appendString([]byte(`,"model":`), modelSHA256)
	}
	if sampleRate < 1 {
		v.rate = strconv.AppendFloat([]byte(`,"sample_rate":`), sampleRate, 'g', -1, 64)
	}
	return v
}

// Len is how many bytes the version adds to a record, at most.
func (v *Version) Len() int { return len(v.model) + len(v.rate) }

// AppendHead begins a record: when it was scored (Unix nanoseconds), its
// route, score (in [0,1], written with four decimals) and verdict, and the
// version (nil: none). A sampled record, one of the unflagged requests of
// which a share is shipped, carries the sample rate, so that it stands for
// 1/sample_rate requests; any other stands for itself.
func AppendHead(b []byte, tsUnixNano int64, route string, score float64, flagged bool, v *Version, sampled bool) []byte {
	b = append(b, `{"ts_ns":`...)
	b = strconv.AppendInt(b, tsUnixNano, 10)
	b = append(b, `,"route":`...)
	b = appendString(b, route)
	b = append(b, `,"score":`...)
	b = appendFixed4(b, score)
	b = append(b, `,"flagged":`...)
	b = strconv.AppendBool(b, flagged)
	if v != nil {
		b = append(b, v.model...)
		if sampled {
			b = append(b, v.rate...)
		}
	}
	return append(b, `,"request":{`...)
}

// AppendRequest writes the request's fields up to its headers. path, query
// and body are what leaves the sidecar of them: the route template and the
// shapes (models.ShapeQuery, models.ShapeValue); an empty body is left out.
//
// valueKeyID names the value key the query's and body's digest marks were
// made with (models.Request.ValueKeyID; 0: none, left out); keywordMarks
// says their values that had keywords carry a keyword mark
// (models.Request.KeywordMarks: the shapes of models.AppendShapeQuery do);
// formBytes, when not 0, says body is the form of a JSON body's fields,
// that long (models.Request.FormBytes).
func AppendRequest(b []byte, method, path, query, source, destination string, status int, requestBytes, responseBytes int64, body []byte, valueKeyID uint32, keywordMarks bool, formBytes int64) []byte {
	b = append(b, `"Method":`...)
	b = appendString(b, method)
	b = append(b, `,"Path":`...)
	b = appendString(b, path)
	b = append(b, `,"Query":`...)
	b = appendString(b, query)
	b = append(b, `,"Source":`...)
	b = appendString(b, source)
	b = append(b, `,"Destination":`...)
	b = appendString(b, destination)
	b = append(b, `,"Status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"RequestBytes":`...)
	b = strconv.AppendInt(b, requestBytes, 10)
	b = append(b, `,"ResponseBytes":`...)
	b = strconv.AppendInt(b, responseBytes, 10)
	if len(body) > 0 {
		// A []byte is base64 in JSON.
		b = append(b, `,"Body":"`...)
		b = base64.StdEncoding.AppendEncode(b, body)
		b = append(b, '"')
	}
	if valueKeyID != 0 {
		b = append(b, `,"ValueKeyID":`...)
		b = strconv.AppendUint(b, uint64(valueKeyID), 10)
	}
	if keywordMarks {
		b = append(b, `,"KeywordMarks":true`...)
	}
	if formBytes > 0 && len(body) > 0 {
		b = append(b, `,"FormBytes":`...)
		b = strconv.AppendInt(b, formBytes, 10)
	}
	return append(b, `,"Headers":[`...)
}

// AppendHeader writes one header; first says it is the record's first.
func AppendHeader(b []byte, first bool, name, value string) []byte {
	if !first {
		b = append(b, ',')
	}
	b = append(b, `{"Name":`...)
	b = appendString(b, name)
	b = append(b, `,"Value":`...)
	b = appendString(b, value)
	return append(b, '}')
}

// AppendEnd ends a record (not the line: a batch puts a newline after each).
func AppendEnd(b []byte) []byte { return append(b, "]}}"...) }

// appendString writes s as a JSON string. Control bytes are escaped, valid
// UTF-8 is kept, and a byte that is not valid UTF-8 becomes the code point
// of the same number (so a hostile request cannot make the line invalid
// JSON, and a shape's high-class bytes stay high-class).
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		// Runs of plain ASCII are copied at once.
		j := i
		for j < len(s) && s[j] >= 0x20 && s[j] < 0x7f && s[j] != '"' && s[j] != '\\' {
			j++
		}
		b = append(b, s[i:j]...)
		if i = j; i == len(s) {
			break
		}
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
			i++
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			i++
		case c < 0x80:
			b = append(b, c)
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n <= 1 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
				i++
				continue
			}
			b = append(b, s[i:i+n]...)
			i += n
		}
	}
	return append(b, '"')
}

// appendFixed4 writes x in [0,1] with four decimals (outside, the nearest
// bound).
func appendFixed4(b []byte, x float64) []byte {
	n := int64(x*10000 + 0.5)
	if n >= 10000 {
		return append(b, "1.0000"...)
	}
	if n < 0 {
		n = 0
	}
	return append(b, '0', '.', byte('0'+n/1000), byte('0'+n/100%10), byte('0'+n/10%10), byte('0'+n%10))
}

// Decision is what the filter's policy decided about a request flagged at
// the request phase (package enforcement): the reason enforce denies it
// for (Deny; ReasonNone: let through), the reason the reasons alone would
// deny it for before the exceptions (WouldDeny), the exceptions that set a
// reason aside, and the parameter and value shape behind a value reason.
type Decision struct {
	Deny, WouldDeny models.ReasonCode
	Enforced        bool
	Excepted        []string
	Param, Shape    string
	HaveParam       bool
}

// AppendDecision adds a flagged request's decision to a finished record
// (AppendEnd's closing brace is reopened): its reasons, "deny" (and
// "enforced" when the filter answered 403), "would_deny" (before the
// exceptions: with no "deny", an exception saved the request), "excepted",
// and "deny_param" with "deny_shape". A record that does not end in a
// brace is returned as it is.
func AppendDecision(b []byte, v *models.Verdict, d *Decision) []byte {
	if len(b) == 0 || b[len(b)-1] != '}' {
		return b
	}
	b = append(b[:len(b)-1], `,"reasons":[`...)
	for i, r := range v.ReasonList() {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, r.Code.String())
	}
	b = append(b, ']')
	if d.Deny != models.ReasonNone {
		b = appendString(append(b, `,"deny":`...), d.Deny.String())
		if d.Enforced {
			b = append(b, `,"enforced":true`...)
		}
	}
	if d.WouldDeny != models.ReasonNone {
		b = appendString(append(b, `,"would_deny":`...), d.WouldDeny.String())
	}
	if len(d.Excepted) > 0 {
		b = append(b, `,"excepted":[`...)
		for i, id := range d.Excepted {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, id)
		}
		b = append(b, ']')
	}
	if d.HaveParam {
		b = appendString(append(b, `,"deny_param":`...), d.Param)
		b = appendString(append(b, `,"deny_shape":`...), d.Shape)
	}
	return append(b, '}')
}
