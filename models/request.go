// Package models is meshward's shared brain: the view of one request, the
// features drawn from it, the model that scores it, training, and the binary
// codec that carries a model from the trainer to the filter.
//
// The same code runs in the sidecar (compiled to .wasm), in the control
// plane's trainer and in replay, so offline evaluation equals online
// behaviour. It uses the standard library only and builds for GOOS=wasip1.
package models

import (
	"strings"
	"time"
)

// MaxBodyPrefix bounds the body prefix a filter's record carries (as its
// shape, for training) and the bodies of captures read from packets.
const MaxBodyPrefix = 4096

// MaxBody bounds how much of a request body a Request read from traffic
// files carries: the most scoring reads (MaxBodyLimit).
const MaxBody = MaxBodyLimit

// UnknownSource is the source of a request whose caller nothing trustworthy
// names (no mTLS identity, no address): never learned as a caller, so such
// requests score as from a new caller.
const UnknownSource = "unknown"

// Header is one request header; Name is lower-case, as HTTP/2 and Envoy
// present it.
type Header struct {
	Name, Value string
}

// Request is the view of one request that the filter, replay and the trainer
// share. Only Method and Path are required; zero values mean "unknown".
type Request struct {
	Method string
	// Path is the request path without the query string.
	Path string
	// Query is the raw query string, without the leading '?'.
	Query string
	// Headers are the request headers other than HTTP/2 pseudo-headers.
	Headers []Header
	// Body is the request body, or as much of it as was kept (MaxBody;
	// RequestBytes says how long it was). Scoring reads up to
	// Scratch.BodyLimit of it, chunk by chunk in the filter.
	Body []byte

	// Source identifies the caller: an mTLS principal
	// (spiffe://<td>/ns/<ns>/sa/<sa>), a workload name, or an address.
	Source string
	// Destination is the workload that receives the request.
	Destination string

	// Observed after the fact, when known (replay, records from the filter).
	Status        int
	RequestBytes  int64
	ResponseBytes int64
	Duration      time.Duration
	// ValueKeyID, in a record, is the ID of the value key its digest marks
	// were made with (ValueKey.ID; 0: the filter had none): only a record
	// of the key a model's digests are made with teaches or is judged by
	// them, so records of a key being rotated out change nothing.
	ValueKeyID uint32 `json:",omitempty"`
	// KeywordMarks, in a record, says its filter marked the query and form
	// values that had keywords (a keyword mark, see AppendShapeQuery): a
	// value without one had none. Only such records teach a parameter how
	// often its values carry keywords through the loop; the shapes alone
	// keep none.
	KeywordMarks bool `json:",omitempty"`
	// FormBytes, when not 0, says Body holds the form of a JSON body's
	// fields (JSONFields), not the body as sent, and how long that form
	// was, as RequestBytes says of the body: a filter's record of a JSON
	// body carries the form, shaped (ShapeBody), whose first MaxBodyPrefix
	// bytes are carried whole and the rest in short (BodyTail). Such a
	// body is read as a form whatever the content type says.
	FormBytes int64 `json:",omitempty"`

	// marked says the request is a record a filter shipped, read as the
	// trainer reads one (AsRead, Trainer.readable): a short value's shape
	// may follow the mark of its digest (AppendShapeQueryDigest), which
	// scoring then takes off the value and uses as its digest. A request a
	// filter judges is never marked: its values are what they are.
	marked bool
}

// SplitTarget splits a request target ("/a/b?x=1") into path and query.
func SplitTarget(target string) (path, query string) {
	// strings.IndexByte compares a word at a time: compiled to WebAssembly,
	// a byte loop over the target costs twice as much.
	if i := strings.IndexByte(target, '?'); i >= 0 {
		return target[:i], target[i+1:]
	}
	return target, ""
}

// Header returns the value of the first header with the given lower-case name.
func (r *Request) Header(name string) (string, bool) {
	for i := range r.Headers {
		if r.Headers[i].Name == name {
			return r.Headers[i].Value, true
		}
	}
	return "", false
}
