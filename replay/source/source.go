// Package source turns captured traffic into a stream of labelled requests.
// Every format (JSONL records, HAR 1.2, raw HTTP/1.x, Jaeger spans, pcap and
// pcapng captures) yields the same Record, and a malformed entry is reported
// with its file and position while the rest of the input is still read.
package source

import (
	"fmt"
	"time"

	"github.com/meshward/meshward/models"
)

// Record is one request read from a source.
type Record struct {
	// Pos is where the record came from ("requests.jsonl:12").
	Pos string
	// TS is when the request was made; zero when the source does not say.
	TS      time.Time
	Request models.Request
	// Label is "normal", an attack label, or "" when unlabelled.
	Label      string
	AttackType string
}

// IsAttack reports whether the record is labelled as anything but normal.
func (r *Record) IsAttack() bool { return r.Label != "" && r.Label != LabelNormal }

// LabelNormal is the label of benign traffic.
const LabelNormal = "normal"

// Names given to requests whose source or destination the traffic does not
// say, so that training, the native runner and the filter (which needs a
// workload name) all put them in the same place.
const (
	DefaultSource      = "unknown"
	DefaultDestination = "default"
)

// Problem is a malformed entry that was skipped.
type Problem struct {
	Pos string
	Err error
}

func (p Problem) Error() string { return fmt.Sprintf("%s: %v", p.Pos, p.Err) }

// Overrides set identity and labels for a whole source (the --src, --dst and
// --label flags); empty fields leave the records as read.
type Overrides struct {
	Src, Dst, Label string
}

// Apply sets the overridden fields of r.
func (o Overrides) Apply(r *Record) {
	if o.Src != "" {
		r.Request.Source = o.Src
	}
	if o.Dst != "" {
		r.Request.Destination = o.Dst
	}
	if o.Label != "" {
		r.Label = o.Label
	}
}
