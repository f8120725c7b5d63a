package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshward/meshward/control-plane/identity"
)

// Identity is how the ADS server knows who is asking.
type Identity string

// The identity modes.
const (
	// IdentityTLS: the client certificate verified by the server's TLS
	// (Config.TLS with a client CA): plain Envoy with an SDS certificate.
	IdentityTLS Identity = "tls"
	// IdentityXFCC: the x-forwarded-client-cert header the control plane's
	// own Istio sidecar sets on the gRPC stream (STRICT mTLS; see
	// identity.FromXFCC).
	IdentityXFCC Identity = "xfcc"
	// IdentityNone: no check, for loopback development only. The server
	// never serves a credential, but any client may then read any group's
	// configuration (its model: who calls whom).
	IdentityNone Identity = "none"
)

// ErrNode marks a node refused for its identity.
var ErrNode = errors.New("xDS node not allowed")

// identityMode is the configured mode; unset, it follows TLS: a client CA
// means IdentityTLS, none IdentityNone (the command line makes the choice
// explicit: -xds-identity).
func (c Config) identityMode() Identity {
	if c.Identity != "" {
		return c.Identity
	}
	if c.TLS != nil && c.TLS.ClientAuth == tls.RequireAndVerifyClientCert {
		return IdentityTLS
	}
	return IdentityNone
}

// validateAuth checks the identity settings, naming the flags.
func (c Config) validateAuth() error {
	switch c.identityMode() {
	case IdentityTLS:
		if c.TLS == nil || c.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
			return errors.New("-xds-identity=tls needs -xds-cert, -xds-key and -xds-client-ca (clients present certificates that CA issued)")
		}
	case IdentityXFCC, IdentityNone:
	default:
		return fmt.Errorf("-xds-identity %q is not tls, xfcc or none", c.Identity)
	}
	return c.Binding.Validate()
}

// streamIdentities remembers the identity of each open stream, read from
// its connection when it opens, for the checks of its requests.
type streamIdentities struct {
	mu  sync.Mutex
	ids map[int64]streamID
}

type streamID struct {
	id      string
	checked bool // a node was checked on this stream
}

// peerIdentity reads the caller's identity from a stream's context.
func (s *Server) peerIdentity(ctx context.Context) (string, error) {
	switch s.cfg.identityMode() {
	case IdentityTLS:
		p, ok := peer.FromContext(ctx)
		if !ok {
			return "", identity.ErrNoIdentity
		}
		ti, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(ti.State.VerifiedChains) == 0 {
			return "", fmt.Errorf("%w: no verified client certificate", identity.ErrNoIdentity)
		}
		return identity.FromCert(ti.State.VerifiedChains[0][0])
	case IdentityXFCC:
		md, _ := metadata.FromIncomingContext(ctx)
		vs := md.Get("x-forwarded-client-cert")
		if len(vs) > 1 {
			return "", fmt.Errorf("%w (%d headers)", identity.ErrForgedXFCC, len(vs))
		}
		if len(vs) == 0 {
			return identity.FromXFCC("")
		}
		return identity.FromXFCC(vs[0])
	}
	return "", nil
}

// opened records a new stream's identity, or refuses the stream.
func (s *Server) opened(ctx context.Context, id int64) error {
	if s.cfg.identityMode() == IdentityNone {
		return nil
	}
	who, err := s.peerIdentity(ctx)
	if err != nil {
		s.refuse()
		return status.Error(codes.Unauthenticated, err.Error())
	}
	s.streams.mu.Lock()
	s.streams.ids[id] = streamID{id: who}
	s.streams.mu.Unlock()
	return nil
}

func (s *Server) closed(id int64) {
	s.streams.mu.Lock()
	delete(s.streams.ids, id)
	s.streams.mu.Unlock()
}

// checkStream checks a stream request's node against the stream's identity.
// A nil node (delta requests after the first) keeps the one checked.
func (s *Server) checkStream(id int64, node *corev3.Node) error {
	if s.cfg.identityMode() == IdentityNone {
		return nil
	}
	s.streams.mu.Lock()
	st, ok := s.streams.ids[id]
	s.streams.mu.Unlock()
	if !ok {
		s.refuse()
		return status.Error(codes.Unauthenticated, "stream without an identity")
	}
	if node == nil && st.checked {
		return nil
	}
	if err := s.checkNode(st.id, node); err != nil {
		s.refuse()
		return status.Error(codes.PermissionDenied, err.Error())
	}
	s.streams.mu.Lock()
	if _, open := s.streams.ids[id]; open {
		s.streams.ids[id] = streamID{id: st.id, checked: true}
	}
	s.streams.mu.Unlock()
	return nil
}

// checkFetch checks a unary fetch (ECDS FetchExtensionConfigs).
func (s *Server) checkFetch(ctx context.Context, node *corev3.Node) error {
	if s.cfg.identityMode() == IdentityNone {
		return nil
	}
	who, err := s.peerIdentity(ctx)
	if err != nil {
		s.refuse()
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if err := s.checkNode(who, node); err != nil {
		s.refuse()
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return nil
}

// checkNode says whether the holder of identity who may be this node. The
// node's group (the workload whose configuration it gets, see Group) must
// be one the identity speaks for (Config.Binding: the collector's rule),
// and its id must name the identity: the SPIFFE ID itself, or it followed
// by "/" and an instance name (a pod), or Istio's sidecar id
// sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.<domain> in the
// identity's namespace.
func (s *Server) checkNode(who string, node *corev3.Node) error {
	if node == nil {
		return fmt.Errorf("%w: the first request carries no node", ErrNode)
	}
	g := Group(node)
	if !s.cfg.Binding.Allows(who, g) {
		return fmt.Errorf("%w: %s may not fetch the configuration of %.253q", ErrNode, who, g)
	}
	id := node.GetId()
	if id == who || strings.HasPrefix(id, who+"/") {
		return nil
	}
	_, ns, _, _ := identity.ParseSPIFFE(who)
	if parts := strings.Split(id, "~"); len(parts) == 4 && parts[0] == "sidecar" && strings.HasPrefix(parts[3], ns+".svc.") && strings.HasSuffix(parts[2], "."+ns) {
		return nil
	}
	return fmt.Errorf("%w: node id %.253q does not name %s (want the SPIFFE ID, \"<SPIFFE ID>/<instance>\" or Istio's sidecar~ip~pod.ns~ns.svc.domain)", ErrNode, id, who)
}

// refuse counts a refused client.
func (s *Server) refuse() {
	s.mu.Lock()
	s.refused++
	s.mu.Unlock()
}

// Refused is how many streams and fetches were refused for their identity.
func (s *Server) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}
