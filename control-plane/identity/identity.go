// Package identity names who is calling the control plane, from what only
// the mesh can vouch for: the SPIFFE ID in a verified client certificate
// (spiffe://<trust domain>/ns/<namespace>/sa/<service account>), the
// x-forwarded-client-cert header the control plane's own Istio sidecar
// sets, or a Kubernetes service-account user. It also says which workloads
// an identity may speak for (Binding): the collector accepts a sidecar's
// records only about its own workload, and xDS serves a node only its own
// workload's configuration.
package identity

import (
	"bufio"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// DefaultTrustDomain is Istio's and most meshes' default trust domain.
const DefaultTrustDomain = "cluster.local"

// Sentinel errors: every error of this package wraps one.
var (
	// ErrNoIdentity: the request carries nothing the mesh vouches for.
	ErrNoIdentity = errors.New("no identity")
	// ErrBadIdentity: what it carries is not one SPIFFE ID.
	ErrBadIdentity = errors.New("not a SPIFFE identity")
	// ErrForgedXFCC: an x-forwarded-client-cert header with more than one
	// element, which the sidecar's sanitizing (SANITIZE_SET) never sends:
	// a client added its own.
	ErrForgedXFCC = errors.New("x-forwarded-client-cert has more than one element")
)

// maxID bounds an identity (a SPIFFE ID is at most 2048 bytes).
const maxID = 2048

// SPIFFE returns the SPIFFE ID of a Kubernetes service account.
func SPIFFE(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// ParseSPIFFE splits spiffe://<td>/ns/<ns>/sa/<sa>; ok is false for
// anything else (other path shapes, empty or odd segments).
func ParseSPIFFE(id string) (trustDomain, namespace, serviceAccount string, ok bool) {
	rest, found := strings.CutPrefix(id, "spiffe://")
	if !found || len(id) > maxID {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" {
		return "", "", "", false
	}
	for _, p := range []string{parts[0], parts[2], parts[4]} {
		if !validSegment(p) {
			return "", "", "", false
		}
	}
	return parts[0], parts[2], parts[4], true
}

// validSegment accepts the characters of DNS names and Kubernetes names
// (and the trust domain's), nothing that could be read two ways.
func validSegment(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// FromServiceAccountUser maps a Kubernetes user system:serviceaccount:NS:SA
// to its SPIFFE ID in trustDomain; ok is false for other users.
func FromServiceAccountUser(user, trustDomain string) (string, bool) {
	rest, found := strings.CutPrefix(user, "system:serviceaccount:")
	if !found {
		return "", false
	}
	ns, sa, found := strings.Cut(rest, ":")
	if !found || !validSegment(ns) || !validSegment(sa) || strings.Contains(sa, ":") {
		return "", false
	}
	return SPIFFE(trustDomain, ns, sa), true
}

// FromCert returns the SPIFFE ID of a verified client certificate: its one
// URI SAN. A certificate with none, several, or one that is not a SPIFFE
// ID of the namespace/service-account form names nobody.
func FromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no client certificate", ErrNoIdentity)
	}
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("%w: the client certificate has %d URI SANs, want exactly one", ErrBadIdentity, len(cert.URIs))
	}
	id := cert.URIs[0].String()
	if _, _, _, ok := ParseSPIFFE(id); !ok {
		return "", fmt.Errorf("%w: %.100q", ErrBadIdentity, id)
	}
	return id, nil
}

// FromXFCC returns the SPIFFE ID in an x-forwarded-client-cert header set
// by the control plane's own sidecar. The sidecar must sanitize the header
// (forward_client_cert_details SANITIZE_SET, as manifests/istio ships): it
// then holds exactly one element, the client certificate the sidecar
// verified, and nothing when the connection was not mTLS. Several elements
// mean a client sent its own (the sidecar appended rather than replaced):
// refused. The element must carry exactly one URI.
func FromXFCC(header string) (string, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return "", fmt.Errorf("%w: no x-forwarded-client-cert header (is the collector behind its sidecar, with STRICT mTLS?)", ErrNoIdentity)
	}
	if len(header) > 16<<10 {
		return "", fmt.Errorf("%w: x-forwarded-client-cert of %d bytes", ErrBadIdentity, len(header))
	}
	elems, err := splitQuoted(header, ',')
	if err != nil {
		return "", err
	}
	if len(elems) != 1 {
		return "", fmt.Errorf("%w (%d)", ErrForgedXFCC, len(elems))
	}
	pairs, err := splitQuoted(elems[0], ';')
	if err != nil {
		return "", err
	}
	var uris []string
	for _, p := range pairs {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), "URI") {
			uris = append(uris, unquote(strings.TrimSpace(v)))
		}
	}
	if len(uris) != 1 {
		return "", fmt.Errorf("%w: x-forwarded-client-cert names %d URIs, want exactly one", ErrBadIdentity, len(uris))
	}
	if _, _, _, ok := ParseSPIFFE(uris[0]); !ok {
		return "", fmt.Errorf("%w: %.100q", ErrBadIdentity, uris[0])
	}
	return uris[0], nil
}

// splitQuoted splits s at sep outside double quotes (Envoy quotes values
// holding , ; or = and escapes quotes inside with a backslash).
func splitQuoted(s string, sep byte) ([]string, error) {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if quoted {
		return nil, fmt.Errorf("%w: unterminated quote in x-forwarded-client-cert", ErrBadIdentity)
	}
	return append(out, s[start:]), nil
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`)
	}
	return v
}

// Binding says which workloads an identity speaks for: the workloads whose
// records its sidecar may send, whose configuration its Envoy may fetch.
//
// A workload is named as the filter and xDS name it, "<name>.<namespace>"
// (Istio's WORKLOAD_NAME and NAMESPACE). By default the workload <name>.<ns>
// belongs to spiffe://<TrustDomain>/ns/<ns>/sa/<name>: the namespace must
// match and the workload runs as the service account of its own name, the
// convention Istio's samples and most charts follow. Workloads that run as
// another service account, or whose name has no namespace, are listed in
// Workloads with their identity; a listed workload belongs to that identity
// alone.
type Binding struct {
	TrustDomain string
	// Workloads maps a workload to the one identity that speaks for it,
	// where the default rule does not fit.
	Workloads map[string]string
}

// Identity returns the identity a workload belongs to.
func (b Binding) Identity(workload string) (string, bool) {
	if id, ok := b.Workloads[workload]; ok {
		return id, true
	}
	name, ns, found := strings.Cut(workload, ".")
	if !found || !validSegment(name) || !validSegment(ns) || strings.Contains(ns, ".") {
		return "", false
	}
	return SPIFFE(b.trustDomain(), ns, name), true
}

// Allows reports whether identity speaks for workload.
func (b Binding) Allows(identity, workload string) bool {
	want, ok := b.Identity(workload)
	return ok && want == identity
}

func (b Binding) trustDomain() string {
	if b.TrustDomain == "" {
		return DefaultTrustDomain
	}
	return b.TrustDomain
}

// Validate reports every listed identity that is not a SPIFFE ID.
func (b Binding) Validate() error {
	var errs []error
	if !validSegment(b.trustDomain()) {
		errs = append(errs, fmt.Errorf("%w: -trust-domain %q", ErrBadIdentity, b.TrustDomain))
	}
	for w, id := range b.Workloads {
		if _, _, _, ok := ParseSPIFFE(id); !ok {
			errs = append(errs, fmt.Errorf("%w: -workload-identities: workload %s: %q", ErrBadIdentity, w, id))
		}
	}
	return errors.Join(errs...)
}

// ReadWorkloads reads a workload file: one "<workload> <SPIFFE ID>" pair a
// line; blank lines and lines starting with # are skipped. Every bad line
// is reported, by number.
func ReadWorkloads(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	var errs []error
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			errs = append(errs, fmt.Errorf("%s:%d: want \"<workload> <SPIFFE ID>\", got %d fields", path, n, len(fields)))
			continue
		}
		if _, _, _, ok := ParseSPIFFE(fields[1]); !ok {
			errs = append(errs, fmt.Errorf("%s:%d: %w: %q", path, n, ErrBadIdentity, fields[1]))
			continue
		}
		if prev, dup := out[fields[0]]; dup && prev != fields[1] {
			errs = append(errs, fmt.Errorf("%s:%d: workload %s listed twice, with %s and %s", path, n, fields[0], prev, fields[1]))
			continue
		}
		out[fields[0]] = fields[1]
	}
	return out, errors.Join(append(errs, sc.Err())...)
}
