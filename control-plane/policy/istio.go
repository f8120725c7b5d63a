// Package policy translates decisions into what a mesh enforces. Each target
// has one translator, tested with golden files: Istio AuthorizationPolicy
// (security.istio.io/v1, as istio.io/client-go types, as YAML for GitOps,
// and as server-side apply configurations for the API server) and Envoy
// RBAC.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	applysecurityv1 "istio.io/client-go/pkg/applyconfiguration/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshward/meshward/control-plane/decide"
)

// Labels and annotations that mark what meshward owns.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is LabelManagedBy's value on every object meshward writes.
	ManagedBy     = "meshward"
	LabelDecision = "meshward.io/decision"
	// LabelTarget names the workload (name.namespace) a policy protects.
	LabelTarget         = "meshward.io/target"
	AnnotationPrincipal = "meshward.io/principal"
	AnnotationCreated   = "meshward.io/created"
	AnnotationExpires   = "meshward.io/expires"
	AnnotationReason    = "meshward.io/reason"
	AnnotationDryRun    = "istio.io/dry-run"
	// WorkloadLabel is the pod label that names a workload (Istio's
	// canonical service label falls back to it).
	WorkloadLabel = "app"
	// OwnedSelector selects every object meshward owns.
	OwnedSelector = LabelManagedBy + "=" + ManagedBy
)

// TimeFormat is how times are written in annotations.
const TimeFormat = "2006-01-02T15:04:05Z"

// Istio returns one AuthorizationPolicy per target of a decision: DENY every
// request from the principal to that workload, marked dry-run until the
// decision is enforced. A suppressed decision yields none.
func Istio(d decide.Decision) ([]*securityv1.AuthorizationPolicy, error) {
	if d.Suppressed != "" {
		return nil, nil
	}
	if err := check(d); err != nil {
		return nil, err
	}
	principal := strings.TrimPrefix(d.Principal, "spiffe://")
	var out []*securityv1.AuthorizationPolicy
	for _, t := range d.Deny {
		ap := &securityv1.AuthorizationPolicy{
			TypeMeta: metav1.TypeMeta{APIVersion: "security.istio.io/v1", Kind: "AuthorizationPolicy"},
			ObjectMeta: metav1.ObjectMeta{
				Name:      Name(d.ID, t.Name),
				Namespace: t.Namespace,
				Labels:    map[string]string{LabelManagedBy: ManagedBy, LabelDecision: k8sName(d.ID), LabelTarget: labelValue(t.Workload)},
				Annotations: map[string]string{
					AnnotationPrincipal: d.Principal,
					AnnotationCreated:   d.Created.UTC().Format(TimeFormat),
					AnnotationExpires:   d.Expires.UTC().Format(TimeFormat),
					AnnotationReason:    d.Reason,
				},
			},
			Spec: securityv1beta1.AuthorizationPolicy{
				Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{WorkloadLabel: t.Name}},
				Action:   securityv1beta1.AuthorizationPolicy_DENY,
				Rules: []*securityv1beta1.Rule{{From: []*securityv1beta1.Rule_From{{
					Source: &securityv1beta1.Source{Principals: []string{principal}},
				}}}},
			},
		}
		if d.Mode != decide.Enforce {
			ap.Annotations[AnnotationDryRun] = "true"
		}
		out = append(out, ap)
	}
	return out, nil
}

// check refuses a decision whose principal is not exactly one SPIFFE
// identity, or whose targets are not workload names, whatever made it:
// each translator checks again what decide checked, because what a
// policy holds is matched by prefix and suffix ('*') in Istio and a wrong
// principal denies the wrong workloads.
func check(d decide.Decision) error {
	var errs []error
	if err := decide.ValidPrincipal(d.Principal); err != nil {
		errs = append(errs, err)
	} else if td, ns, sa := decide.ParseSPIFFE(d.Principal); d.TrustDomain != "" && d.TrustDomain != td || d.Namespace != ns || d.ServiceAccount != sa {
		errs = append(errs, fmt.Errorf("principal %q: trust domain, namespace and service account %q/%q/%q do not match it", d.Principal, d.TrustDomain, d.Namespace, d.ServiceAccount))
	}
	for _, t := range d.Deny {
		errs = append(errs, decide.ValidTarget(t))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("decision %s: %w", d.ID, err)
	}
	return nil
}

// FromIstio reads back the decision one of meshward's policies carries
// (one target: the policy's). It is the translator's inverse, for
// rebuilding state from what the API server or a GitOps directory holds.
func FromIstio(ap *securityv1.AuthorizationPolicy) (decide.Decision, error) {
	where := ap.Namespace + "/" + ap.Name
	id := ap.Labels[LabelDecision]
	principal := ap.Annotations[AnnotationPrincipal]
	created, cerr := time.Parse(TimeFormat, ap.Annotations[AnnotationCreated])
	expires, eerr := time.Parse(TimeFormat, ap.Annotations[AnnotationExpires])
	if ap.Labels[LabelManagedBy] != ManagedBy || id == "" || principal == "" || cerr != nil || eerr != nil {
		return decide.Decision{}, fmt.Errorf("AuthorizationPolicy %s: not meshward's, or lacks its decision label or its principal, created or expires annotations", where)
	}
	d := decide.Decision{ID: id, Principal: principal, Mode: decide.Enforce, Created: created, Expires: expires,
		Reason: ap.Annotations[AnnotationReason]}
	if err := decide.ValidPrincipal(principal); err != nil {
		return decide.Decision{}, fmt.Errorf("AuthorizationPolicy %s: %w", where, err)
	}
	d.TrustDomain, d.Namespace, d.ServiceAccount = decide.ParseSPIFFE(principal)
	if ap.Annotations[AnnotationDryRun] == "true" {
		d.Mode = decide.DryRun
	}
	name := ap.Spec.GetSelector().GetMatchLabels()[WorkloadLabel]
	target := ap.Labels[LabelTarget]
	if target == "" {
		target = name + "." + ap.Namespace
	}
	d.Deny = []decide.Target{{Workload: target, Name: name, Namespace: ap.Namespace}}
	return d, nil
}

// Name is the object name of the policy of a decision for one target.
// Long names are cut and end in a hash of the whole, so two targets never
// share a name.
func Name(decisionID, target string) string {
	full := "meshward-quarantine-" + decisionID + "-" + target
	if n := k8sName(full); len(n) < 63 {
		return n
	}
	h := fnv.New32a()
	h.Write([]byte(full))
	return strings.TrimRight(k8sName(full)[:54], "-") + fmt.Sprintf("-%08x", h.Sum32())
}

// ApplyConfig is the server-side apply configuration of a policy: every
// field meshward sets, so fields it stops setting (the dry-run annotation
// on promotion) are removed by the apply.
func ApplyConfig(ap *securityv1.AuthorizationPolicy) *applysecurityv1.AuthorizationPolicyApplyConfiguration {
	ac := applysecurityv1.AuthorizationPolicy(ap.Name, ap.Namespace).WithLabels(ap.Labels).WithAnnotations(ap.Annotations)
	// The spec is a protobuf message: set the pointer rather than copy it
	// through WithSpec's value parameter.
	ac.Spec = ap.Spec.DeepCopy()
	return ac
}

// YAML renders policies as one multi-document YAML stream, as kubectl
// apply takes it.
func YAML(aps []*securityv1.AuthorizationPolicy) ([]byte, error) {
	var buf bytes.Buffer
	for i, ap := range aps {
		// The server fills creationTimestamp; a manifest leaves it out.
		clean := ap.DeepCopy()
		b, err := yaml.Marshal(struct {
			APIVersion string                               `json:"apiVersion"`
			Kind       string                               `json:"kind"`
			Metadata   manifestMeta                         `json:"metadata"`
			Spec       *securityv1beta1.AuthorizationPolicy `json:"spec"`
		}{clean.APIVersion, clean.Kind, manifestMeta{clean.Name, clean.Namespace, clean.Labels, clean.Annotations}, &clean.Spec})
		if err != nil {
			return nil, fmt.Errorf("policy %s/%s: %w", ap.Namespace, ap.Name, err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

// manifestMeta is the metadata a manifest carries (no server-set fields).
type manifestMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// k8sName makes a valid Kubernetes object name (DNS label, ≤ 63 characters).
func k8sName(s string) string {
	return sanitize(strings.ToLower(s), func(c rune) bool {
		return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}, "-")
}

// labelValue makes a valid label value (≤ 63 characters of [A-Za-z0-9-_.],
// starting and ending alphanumeric).
func labelValue(s string) string {
	return sanitize(s, func(c rune) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
	}, "-_.")
}

// sanitize replaces every character keep refuses with '-', cuts to 63
// characters and trims the cutset from both ends.
func sanitize(s string, keep func(rune) bool, cutset string) string {
	var b strings.Builder
	for _, c := range s {
		if keep(c) {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	out := b.String()
	if len(out) > 63 {
		out = out[:63]
	}
	return strings.Trim(out, cutset)
}
