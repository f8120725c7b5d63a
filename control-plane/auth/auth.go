// Package auth authenticates and authorizes the callers of the control
// plane's admin API, as kube-rbac-proxy does for Kubernetes components.
//
// In a cluster a caller presents a bearer token (a service account's, or
// any the API server accepts); a TokenReview says who it is, and a
// SubjectAccessReview whether Kubernetes RBAC lets it do what it asks:
// verbs on resources of the API group meshward.io (quarantines/release,
// models/rollback, models/train, exceptions, ...) or, for /metrics, get on
// the non-resource URL (Prometheus' convention). Outside a cluster the
// caller presents the administrator's token, read from a file (at least 32
// bytes, compared in constant time), which may do everything.
//
// A service-account user system:serviceaccount:NS:SA is also a mesh
// workload, spiffe://<trust domain>/ns/NS/sa/SA: the admin API refuses it
// anything that would undo or blind its own quarantine.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshward/meshward/control-plane/identity"
)

// Group is the API group of meshward's RBAC resources.
const Group = "meshward.io"

// MinTokenBytes is the shortest static token accepted.
const MinTokenBytes = 32

// Sentinel errors.
var (
	// ErrUnauthenticated: no credential, or one nobody vouches for (401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrUnavailable: the API server could not be asked (503).
	ErrUnavailable = errors.New("authentication unavailable")
	// ErrConfig: a configuration problem.
	ErrConfig = errors.New("admin authentication")
)

// Config is everything the authenticator takes.
type Config struct {
	// Token is the administrator's static bearer token (from
	// -admin-token-file); empty: none.
	Token []byte
	// Kube, when set, authenticates bearer tokens with TokenReview and
	// authorizes with SubjectAccessReview.
	Kube kubernetes.Interface
	// TrustDomain maps service-account users to SPIFFE IDs.
	TrustDomain string
	// Audiences are the audiences TokenReview checks (empty: the API
	// server's own).
	Audiences []string
	// CacheTTL is how long a review's answer is reused (default 10 s), so a
	// scrape every few seconds does not review every time.
	CacheTTL time.Duration
}

// Validate reports every problem with the configuration, naming the flags.
func (c Config) Validate() error {
	var errs []error
	if len(c.Token) == 0 && c.Kube == nil {
		errs = append(errs, fmt.Errorf("%w: the admin API needs -admin-token-file (outside a cluster) or a Kubernetes API server (-kubeconfig, or the pod's service account) for TokenReview", ErrConfig))
	}
	if len(c.Token) > 0 && len(c.Token) < MinTokenBytes {
		errs = append(errs, fmt.Errorf("%w: -admin-token-file holds %d bytes, at least %d are required", ErrConfig, len(c.Token), MinTokenBytes))
	}
	if strings.ContainsFunc(string(c.Token), func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		errs = append(errs, fmt.Errorf("%w: -admin-token-file's token contains white space or control characters", ErrConfig))
	}
	return errors.Join(errs...)
}

// Principal is an authenticated caller.
type Principal struct {
	// User is the Kubernetes user name, or AdminUser for the static token.
	User   string
	UID    string
	Groups []string
	Extra  map[string]authnv1.ExtraValue
	// Identity is the mesh identity of a service-account user (a SPIFFE
	// ID); empty for other users.
	Identity string
	admin    bool
}

// AdminUser names the holder of the static token in audit lines.
const AdminUser = "meshward:admin-token"

// Attributes are what a request asks to do: a verb on a meshward.io
// resource (and subresource, and name), or a verb on a non-resource path.
type Attributes struct {
	Verb, Resource, Subresource, Name string
	// Path is a non-resource URL (such as /metrics); Resource is then empty.
	Path string
}

// String is how an audit line names the attributes.
func (a Attributes) String() string {
	if a.Resource == "" {
		return a.Verb + " " + a.Path
	}
	s := a.Verb + " " + a.Resource
	if a.Subresource != "" {
		s += "/" + a.Subresource
	}
	if a.Name != "" {
		s += " " + a.Name
	}
	return s
}

// Auth authenticates and authorizes requests. It is safe for concurrent use.
type Auth struct {
	cfg   Config
	mu    sync.Mutex
	cache map[[32]byte]cached
}

type cached struct {
	v       any // *Principal or the authorization's answer
	expires time.Time
}

// maxCache bounds the cached answers; beyond, the cache starts over.
const maxCache = 4096

// New returns an authenticator, or the configuration's problems.
func New(cfg Config) (*Auth, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = 10 * time.Second
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = identity.DefaultTrustDomain
	}
	return &Auth{cfg: cfg, cache: map[[32]byte]cached{}}, nil
}

func (a *Auth) lookup(k [32]byte) (any, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.cache[k]
	if !ok || time.Now().After(c.expires) {
		return nil, false
	}
	return c.v, true
}

func (a *Auth) store(k [32]byte, v any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= maxCache {
		a.cache = map[[32]byte]cached{}
	}
	a.cache[k] = cached{v: v, expires: time.Now().Add(a.cfg.CacheTTL)}
}

// Authenticate returns the caller of a request: the static token's holder,
// or whom TokenReview says the bearer token belongs to.
func (a *Auth) Authenticate(ctx context.Context, r *http.Request) (*Principal, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return nil, fmt.Errorf("%w: an Authorization: Bearer header is required", ErrUnauthenticated)
	}
	if len(a.cfg.Token) > 0 && subtle.ConstantTimeCompare([]byte(tok), a.cfg.Token) == 1 {
		return &Principal{User: AdminUser, admin: true}, nil
	}
	if a.cfg.Kube == nil {
		return nil, fmt.Errorf("%w: wrong token", ErrUnauthenticated)
	}
	key := sha256.Sum256([]byte("authn\x00" + tok))
	if v, ok := a.lookup(key); ok {
		if p, ok := v.(*Principal); ok {
			return p, nil
		}
		return nil, fmt.Errorf("%w: the API server does not accept the token", ErrUnauthenticated)
	}
	tr, err := a.cfg.Kube.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: tok, Audiences: a.cfg.Audiences}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: TokenReview: %v", ErrUnavailable, err)
	}
	if !tr.Status.Authenticated {
		a.store(key, false)
		return nil, fmt.Errorf("%w: the API server does not accept the token", ErrUnauthenticated)
	}
	u := tr.Status.User
	p := &Principal{User: u.Username, UID: u.UID, Groups: u.Groups, Extra: u.Extra}
	p.Identity, _ = identity.FromServiceAccountUser(u.Username, a.cfg.TrustDomain)
	a.store(key, p)
	return p, nil
}

// Authorize says whether a principal may do what the attributes say, and
// why not when it may not. The static token's holder may do everything;
// others are asked about with a SubjectAccessReview.
func (a *Auth) Authorize(ctx context.Context, p *Principal, at Attributes) (bool, string, error) {
	if p.admin {
		return true, "", nil
	}
	if a.cfg.Kube == nil {
		return false, "no API server to authorize with", nil
	}
	key := sha256.Sum256([]byte("authz\x00" + p.User + "\x00" + p.UID + "\x00" + strings.Join(p.Groups, ",") + "\x00" + at.String() + "\x00" + at.Path))
	if v, ok := a.lookup(key); ok {
		d := v.(decision)
		return d.allowed, d.reason, nil
	}
	spec := authzv1.SubjectAccessReviewSpec{User: p.User, UID: p.UID, Groups: p.Groups}
	if len(p.Extra) > 0 {
		spec.Extra = map[string]authzv1.ExtraValue{}
		for k, v := range p.Extra {
			spec.Extra[k] = authzv1.ExtraValue(v)
		}
	}
	if at.Resource == "" {
		spec.NonResourceAttributes = &authzv1.NonResourceAttributes{Path: at.Path, Verb: at.Verb}
	} else {
		spec.ResourceAttributes = &authzv1.ResourceAttributes{Group: Group, Resource: at.Resource, Subresource: at.Subresource, Name: at.Name, Verb: at.Verb}
	}
	sar, err := a.cfg.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("%w: SubjectAccessReview: %v", ErrUnavailable, err)
	}
	d := decision{allowed: sar.Status.Allowed && !sar.Status.Denied, reason: sar.Status.Reason}
	if !d.allowed && d.reason == "" {
		d.reason = fmt.Sprintf("RBAC does not allow %s to %s", p.User, at)
	}
	a.store(key, d)
	return d.allowed, d.reason, nil
}

type decision struct {
	allowed bool
	reason  string
}
