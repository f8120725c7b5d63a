// Package xds serves the filter's configuration to Envoys over ADS (state of
// the world and delta, github.com/envoyproxy/go-control-plane): the meshward
// Wasm filter as an ECDS resource (TypedExtensionConfig carrying the Wasm
// PluginConfig, the group's model section inside its configuration), per
// node group — the workload and namespace from the node's metadata. Each
// group receives only its workload's section (or the fallback section), and
// the snapshot version is that section's sha256, so a release that changes
// one workload's section pushes to that group only (release.go). NACKs are
// recorded and shown, not retried: a group keeps the snapshot it has until
// its section changes.
package xds

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	extensionv3 "github.com/envoyproxy/go-control-plane/envoy/service/extension/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/filter/pluginconfig"
)

// FilterName is the name of the ECDS resource (the filter's config_discovery
// name in the listener) and of the Wasm plugin.
const FilterName = "meshward"

// RBACName is the name of the ECDS resource carrying a group's quarantine
// rules: an Envoy HTTP RBAC filter (shadow rules for dry runs, rules once
// enforced; empty, it denies nothing). The listener names it in a second
// config_discovery filter.
const RBACName = "meshward-rbac"

// Config is everything the xDS server takes.
type Config struct {
	// WasmURI is where Envoy fetches the module (a file path for a local
	// source, or an http(s) URL with WasmSHA256 for a remote one).
	WasmURI    string
	WasmSHA256 string
	// Base is the plugin configuration every group gets; the server fills
	// in the workload and the model.
	Base pluginconfig.Config
	// CanaryShare is the share of each group's nodes that gets a canary
	// model first (default 0.1). It is fixed for the server's life, so a
	// node is a canary or not whatever is being rolled out.
	CanaryShare float64
	// RBAC adds each group's quarantine rules (RBACName) to its
	// snapshots. Envoys must then name both resources in their listeners:
	// over ADS, the cache answers only requests naming every resource of
	// a snapshot.
	RBAC bool
	// LearnFirst serves a group that connects before any model exists the
	// filter in learn mode (no model; it ships samples to the collector),
	// so there is traffic to train the first model on. Without it such a
	// group gets nothing until a model is published.
	LearnFirst bool
	// GroupTTL is how long a node group no Envoy is connected for is
	// kept (its snapshots with it); MaxGroups bounds the groups kept:
	// past it, a new group makes room by forgetting the group idle the
	// longest, and is refused when every group has an Envoy connected.
	// Zero: DefaultGroupTTL, DefaultMaxGroups.
	GroupTTL  time.Duration
	MaxGroups int
	// TLS, when set, serves ADS over TLS (with a client CA: mTLS).
	TLS *tls.Config
	// Identity is how a client's identity is known (auth.go); a node must
	// then be one its identity speaks for (Binding), else it gets nothing.
	Identity Identity
	// Binding says which workloads an identity speaks for.
	Binding identity.Binding
}

// Defaults of the node group bounds.
const (
	DefaultGroupTTL  = 10 * time.Minute
	DefaultMaxGroups = 10_000
)

// ErrTooManyGroups refuses a node of a new group when MaxGroups groups all
// have Envoys connected.
var ErrTooManyGroups = errors.New("xds: too many node groups with Envoys connected")

// LearnVersion is the snapshot version of the learn-mode configuration
// LearnFirst serves before any model exists.
const LearnVersion = "learn"

// ErrConfig is wrapped by every problem Validate reports.
var ErrConfig = errors.New("xds")

// Validate reports every problem with the configuration, naming the flags
// of meshward serve that set the values.
func (c Config) Validate() error {
	var errs []error
	if c.WasmURI == "" {
		errs = append(errs, fmt.Errorf("%w: -wasm-uri is required (a local path, or a URL with -wasm-sha256)", ErrConfig))
	}
	if !(c.CanaryShare >= 0 && c.CanaryShare < 1) {
		errs = append(errs, fmt.Errorf("%w: -canary-share %v is not in [0,1)", ErrConfig, c.CanaryShare))
	}
	if c.GroupTTL < 0 || c.MaxGroups < 0 {
		errs = append(errs, fmt.Errorf("%w: -xds-group-ttl %v and -xds-max-groups %d must not be negative", ErrConfig, c.GroupTTL, c.MaxGroups))
	}
	if c.Base.CollectorToken != "" {
		errs = append(errs, fmt.Errorf("%w: the plugin configuration carries a collector token: xDS serves no credential", ErrConfig))
	}
	if err := c.validateAuth(); err != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrConfig, err))
	}
	return errors.Join(errs...)
}

// Group names the Envoys that share a configuration: "workload.namespace"
// from Istio's node metadata (WORKLOAD_NAME, NAMESPACE), else the node's
// cluster, else its id.
func Group(node *corev3.Node) string {
	if node == nil {
		return ""
	}
	if md := node.GetMetadata().GetFields(); md != nil {
		name, ns := md["WORKLOAD_NAME"].GetStringValue(), md["NAMESPACE"].GetStringValue()
		if name != "" && ns != "" {
			return name + "." + ns
		}
		if name != "" {
			return name
		}
	}
	if node.GetCluster() != "" {
		return node.GetCluster()
	}
	return node.GetId()
}

// nodeKey is the cache key of a node: its group, and whether it is in the
// canary share (chosen by a hash of its id, so a node stays in or out).
type nodeKey struct{ s *Server }

func (k nodeKey) ID(node *corev3.Node) string {
	return cacheKey(Group(node), k.s.inCanary(node.GetId()))
}

func cacheKey(group string, canary bool) string {
	if canary {
		return group + "|canary"
	}
	return group + "|stable"
}

// canaryBucket places a node id in [0,100).
func canaryBucket(id string) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int(h % 100)
}

// InCanary reports whether a node id falls in a canary share.
func InCanary(id string, share float64) bool { return float64(canaryBucket(id)) < share*100 }

func (s *Server) inCanary(id string) bool { return InCanary(id, s.cfg.CanaryShare) }

// NACK is a configuration an Envoy refused.
type NACK struct {
	Group, Node, Version, Error string
	At                          time.Time
}

// Server is the ADS server.
type Server struct {
	cfg    Config
	cache  cachev3.SnapshotCache
	grpc   *grpc.Server
	lis    net.Listener
	mu     sync.Mutex
	nacks  []NACK
	served served // the releases served (release.go)
	groups map[string]bool
	rbac   map[string]*rbacfilterv3.RBAC // by group; absent: empty
	// life is when each group last had a stream, and how many it has;
	// streamGroups names the group of each open stream.
	life         map[string]*groupLife
	streamGroups map[int64]string
	evicted      int64
	nacked       chan struct{}
	// streams are the open streams' identities; refused counts clients
	// refused for theirs.
	streams streamIdentities
	refused int
	// overlays are the groups' exceptions and modes (overlay.go).
	overlays overlays
	// Addr is where the server listens, once started.
	Addr string
}

// New returns a server, or the configuration's problem.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CanaryShare == 0 {
		cfg.CanaryShare = 0.1
	}
	if cfg.GroupTTL == 0 {
		cfg.GroupTTL = DefaultGroupTTL
	}
	if cfg.MaxGroups == 0 {
		cfg.MaxGroups = DefaultMaxGroups
	}
	s := &Server{cfg: cfg, groups: map[string]bool{}, rbac: map[string]*rbacfilterv3.RBAC{}, nacked: make(chan struct{}, 1),
		life: map[string]*groupLife{}, streamGroups: map[int64]string{}, served: newServed(),
		streams: streamIdentities{ids: map[int64]streamID{}}}
	s.cache = cachev3.NewSnapshotCache(true, nodeKey{s}, nil)
	return s, nil
}

// Start listens on addr and serves ADS (state of the world and delta).
func (s *Server) Start(ctx context.Context, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.lis, s.Addr = lis, lis.Addr().String()
	// Every stream's identity is read when it opens, and every request's
	// node checked against it before anything is served (auth.go).
	cb := serverv3.CallbackFuncs{
		StreamOpenFunc:      func(ctx context.Context, id int64, _ string) error { return s.opened(ctx, id) },
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error { return s.opened(ctx, id) },
		FetchRequestFunc: func(ctx context.Context, req *discoveryv3.DiscoveryRequest) error {
			return s.checkFetch(ctx, req.GetNode())
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			if err := s.checkStream(id, req.GetNode()); err != nil {
				return err
			}
			return s.seen(id, req.GetNode(), req.GetVersionInfo(), req.GetErrorDetail().GetMessage())
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			if err := s.checkStream(id, req.GetNode()); err != nil {
				return err
			}
			return s.seen(id, req.GetNode(), "", req.GetErrorDetail().GetMessage())
		},
		StreamClosedFunc:      func(id int64, _ *corev3.Node) { s.closed(id); s.ended(id, time.Now()) },
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.closed(id); s.ended(id, time.Now()) },
	}
	srv := serverv3.NewServer(ctx, s.cache, cb)
	var opts []grpc.ServerOption
	if s.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.TLS)))
	}
	s.grpc = grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, srv)
	// The ECDS service too: an Istio sidecar's ADS belongs to istiod, so an
	// EnvoyFilter's config_discovery reaches meshward by a gRPC
	// api_config_source, which speaks ECDS rather than ADS.
	extensionv3.RegisterExtensionConfigDiscoveryServiceServer(s.grpc, srv)
	go func() { _ = s.grpc.Serve(lis) }()
	return nil
}

// groupLife is what the bounds on node groups need of one group.
type groupLife struct {
	streams int
	last    time.Time // when its last stream closed
}

// Groups returns how many node groups are kept, and how many were
// forgotten (idle past GroupTTL, or making room under MaxGroups).
func (s *Server) Groups() (kept int, evicted int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.groups), s.evicted
}

// GroupNames lists the node groups kept: the workloads whose Envoys
// connected to this replica (a registry of the mesh, for training).
func (s *Server) GroupNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.groupList()
}

// ended notes that a stream ended; its group may expire once it has none.
func (s *Server) ended(id int64, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.streamGroups[id]
	if !ok {
		return
	}
	delete(s.streamGroups, id)
	if l := s.life[g]; l != nil {
		l.streams--
		l.last = now
	}
}

// admit makes room for a new group (s.mu held): groups idle past GroupTTL
// are forgotten, then, at MaxGroups, the one idle the longest; with every
// group connected, the new one is refused.
func (s *Server) admit(g string, now time.Time) error {
	var idlest string
	var at time.Time
	for name, l := range s.life {
		if l.streams > 0 {
			continue
		}
		if now.Sub(l.last) > s.cfg.GroupTTL {
			s.forget(name)
			continue
		}
		if idlest == "" || l.last.Before(at) {
			idlest, at = name, l.last
		}
	}
	if len(s.groups) < s.cfg.MaxGroups {
		return nil
	}
	if idlest == "" {
		return fmt.Errorf("%w (%d): node group %q refused", ErrTooManyGroups, s.cfg.MaxGroups, g)
	}
	s.forget(idlest)
	return nil
}

// forget drops a group and its snapshots (s.mu held). Its quarantine
// rules stay: the control plane sets them, not the Envoys.
func (s *Server) forget(g string) {
	delete(s.groups, g)
	delete(s.life, g)
	s.overlays.forget(g)
	s.evicted++
	for _, canary := range []bool{false, true} {
		s.cache.ClearSnapshot(cacheKey(g, canary))
	}
}

// seen notes a node's group (so a published model reaches it) and the
// stream it came on, and records a NACK.
func (s *Server) seen(id int64, node *corev3.Node, version, nackMsg string) error {
	g := Group(node)
	s.mu.Lock()
	isNew := !s.groups[g]
	if isNew {
		if err := s.admit(g, time.Now()); err != nil {
			s.mu.Unlock()
			return err
		}
		s.life[g] = &groupLife{last: time.Now()}
	}
	if _, ok := s.streamGroups[id]; !ok {
		s.streamGroups[id] = g
		s.life[g].streams++
	}
	s.groups[g] = true
	if nackMsg != "" {
		s.nacks = append(s.nacks, NACK{Group: g, Node: node.GetId(), Version: version, Error: nackMsg, At: time.Now()})
		if len(s.nacks) > 100 {
			s.nacks = s.nacks[len(s.nacks)-100:]
		}
		select {
		case s.nacked <- struct{}{}:
		default:
		}
	}
	serving := s.served.stable != nil
	s.mu.Unlock()
	if isNew && !serving && s.cfg.LearnFirst {
		_ = s.publishLearn(g)
	}
	if isNew && serving {
		_ = s.publishGroup(g)
	}
	return nil
}

func (s *Server) groupList() []string {
	groups := make([]string, 0, len(s.groups))
	for g := range s.groups {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	return groups
}

// SetRBAC makes f the quarantine rules of a group's sidecars (nil: none),
// delivered with the group's next snapshot — at once when a model is
// being served, else with the first one.
func (s *Server) SetRBAC(group string, f *rbacfilterv3.RBAC) error {
	if f != nil {
		if err := f.ValidateAll(); err != nil {
			return fmt.Errorf("rbac for %s: %w", group, err)
		}
	}
	s.mu.Lock()
	if f == nil {
		delete(s.rbac, group)
	} else {
		s.rbac[group] = f
	}
	serving := s.served.stable != nil
	s.mu.Unlock()
	if !serving {
		if s.cfg.LearnFirst {
			return s.publishLearn(group)
		}
		return nil
	}
	return s.publishGroup(group)
}

// RBACExtension builds the ECDS resource of a group's quarantine rules.
func (s *Server) RBACExtension(group string) (*corev3.TypedExtensionConfig, string, error) {
	s.mu.Lock()
	f := s.rbac[group]
	s.mu.Unlock()
	if f == nil {
		f = &rbacfilterv3.RBAC{}
	}
	tc, err := anypb.New(f)
	if err != nil {
		return nil, "", err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(b)
	ext := &corev3.TypedExtensionConfig{Name: RBACName, TypedConfig: tc}
	return ext, hex.EncodeToString(sum[:6]), ext.ValidateAll()
}

// snapshot is what a group's nodes are served: the filter's extension and,
// with RBAC over xDS, the group's RBAC rules. The version changes with
// either.
func (s *Server) snapshot(group, version string, filter types.Resource) (*cachev3.Snapshot, error) {
	resources := []types.Resource{filter}
	if s.cfg.RBAC {
		rbac, rbacVersion, err := s.RBACExtension(group)
		if err != nil {
			return nil, err
		}
		version += "." + rbacVersion
		resources = append(resources, rbac)
	}
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{resourcev3.ExtensionConfigType: resources})
	if err != nil {
		return nil, err
	}
	return snap, snap.Consistent()
}

// publishLearn serves a group the filter in learn mode, without a model.
func (s *Server) publishLearn(group string) error {
	res, err := s.Extension(group, nil)
	if err != nil {
		return err
	}
	snap, err := s.snapshot(group, LearnVersion, res)
	if err != nil {
		return err
	}
	// Under the lock, and only while there is still no model: a Publish
	// that got in first must not be overwritten by the learn configuration.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served.stable != nil {
		return nil
	}
	var errs []error
	for _, canary := range []bool{false, true} {
		errs = append(errs, s.cache.SetSnapshot(context.Background(), cacheKey(group, canary), snap))
	}
	return errors.Join(errs...)
}

// Extension builds the ECDS resource of a group: the Wasm HTTP filter with
// its plugin configuration, validated as the filter will (pluginconfig) and
// as Envoy will (the protos' Validate).
func (s *Server) Extension(group string, encoded []byte) (*corev3.TypedExtensionConfig, error) {
	c := s.cfg.Base
	c.Workload = group
	if encoded == nil { // the group's section (or the fallback section)
		c.Mode = pluginconfig.ModeLearn // no model yet: learn mode needs none
	} else {
		c.WithModel(encoded)
		ov, _ := s.overlays.get(group)
		c.Exceptions = ov.Exceptions
		if ov.Mode != "" {
			c.Mode = ov.Mode
		}
	}
	doc, err := c.Encode()
	if err != nil {
		return nil, err
	}
	if _, err := pluginconfig.Parse(doc, ""); err != nil {
		return nil, fmt.Errorf("group %s: the filter would refuse this configuration: %w", group, err)
	}
	conf, err := anypb.New(wrapperspb.String(string(doc)))
	if err != nil {
		return nil, err
	}
	code := &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Local{Local: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: s.cfg.WasmURI}}}}
	if s.cfg.WasmSHA256 != "" {
		code = &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Remote{Remote: &corev3.RemoteDataSource{
			HttpUri: &corev3.HttpUri{Uri: s.cfg.WasmURI, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "meshward-wasm"}, Timeout: durationpb.New(10 * time.Second)},
			Sha256:  s.cfg.WasmSHA256,
		}}}
	}
	filter := &wasmfilterv3.Wasm{Config: &wasmv3.PluginConfig{
		Name:          FilterName,
		Configuration: conf,
		Vm: &wasmv3.PluginConfig_VmConfig{VmConfig: &wasmv3.VmConfig{
			VmId: FilterName, Runtime: "envoy.wasm.runtime.v8", Code: code,
		}},
		// A broken module or configuration must not take traffic down.
		FailurePolicy: wasmv3.FailurePolicy_FAIL_OPEN,
	}}
	if err := filter.ValidateAll(); err != nil {
		return nil, err
	}
	tc, err := anypb.New(filter)
	if err != nil {
		return nil, err
	}
	ext := &corev3.TypedExtensionConfig{Name: FilterName, TypedConfig: tc}
	return ext, ext.ValidateAll()
}

// NACKs returns the refusals recorded, oldest first.
func (s *Server) NACKs() []NACK {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]NACK(nil), s.nacks...)
}

// NACKed signals (without blocking the server) when a NACK is recorded.
func (s *Server) NACKed() <-chan struct{} { return s.nacked }

// Close stops the server.
func (s *Server) Close() {
	if s.grpc != nil {
		s.grpc.Stop()
	}
}
