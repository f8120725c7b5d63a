// Package lateral holds the values of lateral-movement detection that
// travel between stages and programs: the Incident the detector opens
// (control-plane/detect) and the Decision made on it (control-plane/decide),
// which the sinks apply, the store keeps, the admin API lists and replay's
// reports print. Values only, standard library only: the control plane and
// replay both import it from below, and neither imports the other for it.
package lateral

import "time"

// Edge is evidence of one (new) edge: the destination and route a source used.
type Edge struct {
	Destination string    `json:"destination"`
	Method      string    `json:"method"`
	Route       string    `json:"route"`
	Count       int       `json:"count"`
	Statuses    []int     `json:"statuses,omitempty"`
	First       time.Time `json:"first"`
	Last        time.Time `json:"last"`
}

// Evidence is one request kept with an incident.
type Evidence struct {
	TS          time.Time `json:"ts"`
	Destination string    `json:"destination"`
	Request     string    `json:"request"`
	Status      int       `json:"status,omitempty"`
	Score       float64   `json:"score"`
	Reasons     []string  `json:"reasons,omitempty"`
	Pos         string    `json:"pos,omitempty"`
}

// Incident is a source principal caught moving laterally, with why.
type Incident struct {
	ID        string    `json:"id"`
	Principal string    `json:"principal"`
	Opened    time.Time `json:"opened"`
	// FirstNewEdge is when the source first used an edge it never had.
	FirstNewEdge time.Time `json:"first_new_edge"`
	// Signals says which thresholds were crossed, e.g. "new_destinations=3".
	Signals []string `json:"signals"`
	// NewEdges lists the destinations and routes the source never used before.
	NewEdges []Edge `json:"new_edges"`
	// KnownDestinations are the destinations the source was learned calling.
	KnownDestinations []string   `json:"known_destinations"`
	Denied            int        `json:"denied_responses"`
	Flagged           int        `json:"flagged_requests"`
	Evidence          []Evidence `json:"evidence"`
}

// Mode is how a decision is applied.
type Mode string

// The modes: a dry run is evaluated and logged by the mesh but denies
// nothing; enforce denies.
const (
	DryRun  Mode = "dry-run"
	Enforce Mode = "enforce"
)

// Target is a destination workload a principal must no longer reach.
type Target struct {
	Workload  string `json:"workload" yaml:"workload"`
	Name      string `json:"name" yaml:"name"`
	Namespace string `json:"namespace" yaml:"namespace"`
}

// Decision is what meshward decided about one incident.
type Decision struct {
	ID        string `json:"id" yaml:"id"`
	Principal string `json:"principal" yaml:"principal"`
	// Namespace and ServiceAccount come from a SPIFFE principal
	// (spiffe://<td>/ns/<ns>/sa/<sa>); empty for other identities.
	TrustDomain    string    `json:"trust_domain,omitempty" yaml:"trust_domain,omitempty"`
	Namespace      string    `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	ServiceAccount string    `json:"service_account,omitempty" yaml:"service_account,omitempty"`
	Deny           []Target  `json:"deny" yaml:"deny"`
	Mode           Mode      `json:"mode" yaml:"mode"`
	Created        time.Time `json:"created" yaml:"created"`
	Expires        time.Time `json:"expires" yaml:"expires"`
	Reason         string    `json:"reason" yaml:"reason"`
	// Suppressed says why no policy may be written (a guard rail held);
	// empty when the decision stands.
	Suppressed string `json:"suppressed,omitempty" yaml:"suppressed,omitempty"`
	// Held marks a suppressed decision that a limit (rate, cap) holds
	// back: it waits, pending, and is reconsidered when the limit frees.
	Held bool `json:"held,omitempty" yaml:"held,omitempty"`
	// Skipped lists the new destinations not denied, and why (a protected
	// namespace, a name that is no workload, a namespace meshward does
	// not write in).
	Skipped []string `json:"skipped,omitempty" yaml:"skipped,omitempty"`
	// Pending says why a standing decision is not (wholly) applied yet:
	// the error of its last write, retried with backoff.
	Pending string `json:"pending,omitempty" yaml:"pending,omitempty"`
}
