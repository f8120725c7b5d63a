// Package policy translates decisions into what a mesh enforces. Each target
// has one translator, tested with golden files: Istio AuthorizationPolicy
// (security.istio.io/v1) as YAML for GitOps or the API server.
package policy

import (
	"bytes"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshward/meshward/control-plane/decide"
)

// Labels and annotations that mark what meshward owns.
const (
	LabelManagedBy      = "app.kubernetes.io/managed-by"
	LabelDecision       = "meshward.io/decision"
	AnnotationPrincipal = "meshward.io/principal"
	AnnotationExpires   = "meshward.io/expires"
	AnnotationReason    = "meshward.io/reason"
	AnnotationDryRun    = "istio.io/dry-run"
	// WorkloadLabel is the pod label that names a workload (Istio's
	// canonical service label falls back to it).
	WorkloadLabel = "app"
)

// AuthorizationPolicy is the subset of security.istio.io/v1
// AuthorizationPolicy meshward writes, in field order for stable YAML.
type AuthorizationPolicy struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
	Spec       APSpec   `yaml:"spec"`
}

// Metadata is the object metadata meshward sets.
type Metadata struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// APSpec is the policy body: DENY from a principal, for one workload.
type APSpec struct {
	Selector Selector `yaml:"selector"`
	Action   string   `yaml:"action"`
	Rules    []Rule   `yaml:"rules"`
}

// Selector picks the workload the policy protects.
type Selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

// Rule matches requests from the principals.
type Rule struct {
	From []From `yaml:"from"`
}

// From names the sources.
type From struct {
	Source Source `yaml:"source"`
}

// Source lists principals in Istio's form (<td>/ns/<ns>/sa/<sa>).
type Source struct {
	Principals []string `yaml:"principals"`
}

// Istio returns one AuthorizationPolicy per target of a decision: DENY every
// request from the principal to that workload, marked dry-run until the
// decision is enforced. A suppressed decision yields none.
func Istio(d decide.Decision) ([]AuthorizationPolicy, error) {
	if d.Suppressed != "" {
		return nil, nil
	}
	principal := strings.TrimPrefix(d.Principal, "spiffe://")
	if d.Namespace == "" {
		return nil, fmt.Errorf("decision %s: %q is not a SPIFFE principal; Istio policies need one", d.ID, d.Principal)
	}
	var out []AuthorizationPolicy
	for _, t := range d.Deny {
		ap := AuthorizationPolicy{
			APIVersion: "security.istio.io/v1",
			Kind:       "AuthorizationPolicy",
			Metadata: Metadata{
				Name:      k8sName("meshward-quarantine-" + d.ID + "-" + t.Name),
				Namespace: t.Namespace,
				Labels:    map[string]string{LabelManagedBy: "meshward", LabelDecision: k8sName(d.ID)},
				Annotations: map[string]string{
					AnnotationPrincipal: d.Principal,
					AnnotationExpires:   d.Expires.UTC().Format("2006-01-02T15:04:05Z"),
					AnnotationReason:    d.Reason,
				},
			},
			Spec: APSpec{
				Selector: Selector{MatchLabels: map[string]string{WorkloadLabel: t.Name}},
				Action:   "DENY",
				Rules:    []Rule{{From: []From{{Source: Source{Principals: []string{principal}}}}}},
			},
		}
		if d.Mode != decide.Enforce {
			ap.Metadata.Annotations[AnnotationDryRun] = "true"
		}
		out = append(out, ap)
	}
	return out, nil
}

// YAML renders policies as one multi-document YAML stream.
func YAML(aps []AuthorizationPolicy) ([]byte, error) {
	if len(aps) == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for i := range aps {
		if err := enc.Encode(&aps[i]); err != nil {
			return nil, err
		}
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// k8sName makes a valid Kubernetes object name (DNS label, ≤ 63 characters).
func k8sName(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	out := b.String()
	if len(out) > 63 {
		out = out[:63]
	}
	return strings.Trim(out, "-")
}
