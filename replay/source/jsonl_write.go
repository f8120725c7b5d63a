package source

import (
	"encoding/json"
	"io"
	"time"
)

// JSONLWriter writes records in the JSONL request record format ReadJSONL
// reads, so any source can be converted to it and back.
type JSONLWriter struct{ enc *json.Encoder }

// NewJSONLWriter returns a writer of one JSON object per line.
func NewJSONLWriter(w io.Writer) *JSONLWriter {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &JSONLWriter{enc: enc}
}

type jsonlOut struct {
	TS            string      `json:"ts,omitempty"`
	Src           string      `json:"src,omitempty"`
	Dst           string      `json:"dst,omitempty"`
	Method        string      `json:"method"`
	Path          string      `json:"path"`
	Headers       [][2]string `json:"headers,omitempty"`
	Body          string      `json:"body,omitempty"`
	Status        int         `json:"status,omitempty"`
	RequestBytes  int64       `json:"request_bytes,omitempty"`
	ResponseBytes int64       `json:"response_bytes,omitempty"`
	DurationMS    float64     `json:"duration_ms,omitempty"`
	Label         string      `json:"label,omitempty"`
	AttackType    string      `json:"attack_type,omitempty"`
}

// Write writes one record.
func (w *JSONLWriter) Write(r *Record) error {
	q := &r.Request
	o := jsonlOut{Src: q.Source, Dst: q.Destination, Method: q.Method, Path: q.Path, Body: string(q.Body), Status: q.Status,
		RequestBytes: q.RequestBytes, ResponseBytes: q.ResponseBytes, DurationMS: float64(q.Duration) / float64(time.Millisecond),
		Label: r.Label, AttackType: r.AttackType}
	if q.Query != "" {
		o.Path += "?" + q.Query
	}
	if !r.TS.IsZero() {
		o.TS = r.TS.UTC().Format(time.RFC3339Nano)
	}
	for _, h := range q.Headers {
		o.Headers = append(o.Headers, [2]string{h.Name, h.Value})
	}
	return w.enc.Encode(&o)
}
