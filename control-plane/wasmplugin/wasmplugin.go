// Package wasmplugin writes the model in force into an Istio WasmPlugin's
// spec.pluginConfig, for installs where Istio (not meshward's xDS server)
// delivers the filter (manifests/istio/).
//
// It writes by server-side apply, field manager "meshward", and owns only
// the pluginConfig keys it sends: "model", plus the keys set in the base
// configuration (by default "mode"; "collector_cluster" when the control
// plane is given a collector cluster). It never writes a credential: the
// collector authenticates sidecars by their mTLS identity.
// The WasmPlugin CRD declares pluginConfig as an object with
// x-kubernetes-preserve-unknown-fields, which server-side apply tracks key by
// key (f:spec.f:pluginConfig.f:model, ...), so a user's other keys
// (sample_rate, ...) and the rest of the object (url, sha256,
// labels) stay theirs. The test against a real kube-apiserver checks the
// managed fields.
//
// The writer never creates the WasmPlugin (url and sha256 are the
// installer's) and never writes a configuration the filter's own parser
// (filter/pluginconfig) refuses. A write happens only when a key it owns
// differs; each one is logged as an audit line and recorded as a
// Kubernetes Event on the WasmPlugin.
//
// A WasmPlugin gives every selected workload the same configuration, so
// there is no per-node canary on this path: the control plane writes only
// the model in force (store.Current: promoted or published stable models),
// never a canary under watch.
package wasmplugin

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	extv1alpha1 "istio.io/client-go/pkg/apis/extensions/v1alpha1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/filter/pluginconfig"
)

// FieldManager is the server-side apply field manager of every write.
const FieldManager = "meshward"

// DefaultMaxObjectBytes is the budget for the whole WasmPlugin object (as
// JSON) after a write. etcd refuses values over 1.5 MiB by default; the
// budget leaves room for managedFields, status and Istio's own copy.
const DefaultMaxObjectBytes = 1 << 20

// ErrTooLarge is wrapped by the error of a model that would not fit.
var ErrTooLarge = errors.New("the model is too large for a WasmPlugin object")

// ErrRefused is wrapped by the error of a configuration the filter's own
// parser refuses; nothing is written.
var ErrRefused = errors.New("the filter would refuse this pluginConfig")

// Config says which WasmPlugin to write and what besides the model.
type Config struct {
	// Namespace and Name of the WasmPlugin (ParseRef reads "ns/name").
	Namespace, Name string
	// Base holds the other keys written beside the model (Model is
	// ignored); only its set fields are sent and owned.
	Base pluginconfig.Config
	// MaxObjectBytes bounds the object after a write (default
	// DefaultMaxObjectBytes).
	MaxObjectBytes int
	// Identity names this replica in Events (reportingInstance).
	Identity string
}

// ParseRef reads "namespace/name".
func ParseRef(ref string) (namespace, name string, err error) {
	ns, n, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || n == "" || strings.Contains(n, "/") {
		return "", "", fmt.Errorf("-wasmplugin %q: want namespace/name", ref)
	}
	return ns, n, nil
}

// Writer writes models into one WasmPlugin.
type Writer struct {
	cfg Config
	ic  istioclient.Interface
	kc  kubernetes.Interface
	log *slog.Logger
}

// New builds a writer reaching the API server through rc.
func New(cfg Config, rc *rest.Config, log *slog.Logger) (*Writer, error) {
	ic, err := istioclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("wasmplugin: Istio client: %w", err)
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("wasmplugin: Kubernetes client: %w", err)
	}
	return NewForClients(cfg, ic, kc, log)
}

// NewForClients builds a writer on given clients.
func NewForClients(cfg Config, ic istioclient.Interface, kc kubernetes.Interface, log *slog.Logger) (*Writer, error) {
	if cfg.Namespace == "" || cfg.Name == "" {
		return nil, errors.New("wasmplugin: namespace and name are required")
	}
	if cfg.MaxObjectBytes <= 0 {
		cfg.MaxObjectBytes = DefaultMaxObjectBytes
	}
	if cfg.Identity == "" {
		cfg.Identity = "meshward"
	}
	if len(cfg.Identity) > 128 {
		cfg.Identity = cfg.Identity[:128]
	}
	cfg.Base.Model = ""
	return &Writer{cfg: cfg, ic: ic, kc: kc, log: log}, nil
}

// Ref is "namespace/name" of the WasmPlugin.
func (w *Writer) Ref() string { return w.cfg.Namespace + "/" + w.cfg.Name }

// Result is what Apply did.
type Result struct {
	// Written is false when the WasmPlugin held the model already.
	Written bool
	// ResourceVersion of the object after Apply.
	ResourceVersion string
	// ObjectBytes is the object's size as JSON with the model in.
	ObjectBytes int
}

// owned is the pluginConfig keys and values the writer sends for a model.
func (w *Writer) owned(encoded []byte) (map[string]any, error) {
	c := w.cfg.Base
	c.WithModel(encoded)
	// The filter's own parser must accept what is written; the workload is
	// the filter's node metadata, unknown here, so any name stands in.
	if _, err := c.Settings("wasmplugin-check"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	b, err := c.Encode()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// Apply puts the encoded model sha into the WasmPlugin's pluginConfig,
// unless it is there already. A model that would take the object over its
// budget is refused (ErrTooLarge) and the object is left as it was.
func (w *Writer) Apply(ctx context.Context, sha string, encoded []byte) (Result, error) {
	want, err := w.owned(encoded)
	if err != nil {
		return Result{}, fmt.Errorf("WasmPlugin %s, model %.12s: %w", w.Ref(), sha, err)
	}
	wp, err := w.ic.ExtensionsV1alpha1().WasmPlugins(w.cfg.Namespace).Get(ctx, w.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Result{}, fmt.Errorf("WasmPlugin %s not found: install it first (kubectl apply --server-side -k manifests/istio/base); meshward only writes its pluginConfig", w.Ref())
	}
	if err != nil {
		return Result{}, fmt.Errorf("reading WasmPlugin %s: %w", w.Ref(), err)
	}
	current := map[string]any{}
	if wp.Spec.PluginConfig != nil {
		current = wp.Spec.PluginConfig.AsMap()
	}
	// The object as it would be, to hold it to the budget.
	next := map[string]any{}
	for k, v := range current {
		next[k] = v
	}
	for k, v := range want {
		next[k] = v
	}
	size, err := objectSize(wp, next)
	if err != nil {
		return Result{}, err
	}
	if holds(current, want) && ownsOnly(wp, want) {
		return Result{ResourceVersion: wp.ResourceVersion, ObjectBytes: size}, nil
	}
	if size > w.cfg.MaxObjectBytes {
		err := fmt.Errorf("WasmPlugin %s, model %.12s (%d bytes encoded, %d in base64): %w: the object would be %d bytes, over the budget of %d (etcd refuses objects over 1.5 MiB); the model in the WasmPlugin is unchanged. Train a smaller model, or roll out by ECDS (-wasm-uri, manifests/istio-ecds)",
			w.Ref(), sha, len(encoded), len(want["model"].(string)), ErrTooLarge, size, w.cfg.MaxObjectBytes)
		w.event(ctx, wp, corev1.EventTypeWarning, "ModelTooLarge", "RefuseModel", err.Error())
		return Result{ObjectBytes: size}, err
	}
	body, err := json.Marshal(map[string]any{
		"apiVersion": "extensions.istio.io/v1alpha1",
		"kind":       "WasmPlugin",
		"metadata":   map[string]any{"name": w.cfg.Name, "namespace": w.cfg.Namespace},
		"spec":       map[string]any{"pluginConfig": want},
	})
	if err != nil {
		return Result{}, err
	}
	force := true
	out, err := w.ic.ExtensionsV1alpha1().WasmPlugins(w.cfg.Namespace).Patch(ctx, w.cfg.Name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: FieldManager, Force: &force})
	if err != nil {
		return Result{}, fmt.Errorf("server-side apply of the model %.12s to WasmPlugin %s: %w", sha, w.Ref(), err)
	}
	prev := modelSHA(current["model"])
	w.log.Info("wasmplugin: model written", "audit", true, "wasmplugin", w.Ref(), "sha256", sha, "previous_sha256", prev,
		"mode", want["mode"], "model_bytes", len(encoded), "object_bytes", size,
		"resource_version", out.ResourceVersion, "field_manager", FieldManager)
	w.event(ctx, out, corev1.EventTypeNormal, "ModelApplied", "ApplyModel",
		fmt.Sprintf("meshward wrote model %.12s (was %.12s, %d bytes, mode %v) into spec.pluginConfig", sha, prev, len(encoded), want["mode"]))
	return Result{Written: true, ResourceVersion: out.ResourceVersion, ObjectBytes: size}, nil
}

// holds reports whether current has every key of want with the same value
// (both as decoded JSON: numbers are float64 on either side).
func holds(current, want map[string]any) bool {
	for k, v := range want {
		if !reflect.DeepEqual(current[k], v) {
			return false
		}
	}
	return true
}

// ownsOnly reports whether meshward's applied fields under pluginConfig
// are no more than the keys of want. A key it owned before and no longer
// sends (a threshold dropped from the base, say) needs a write: server-side
// apply then removes it.
func ownsOnly(wp *extv1alpha1.WasmPlugin, want map[string]any) bool {
	for _, mf := range wp.ManagedFields {
		if mf.Manager != FieldManager || mf.Operation != metav1.ManagedFieldsOperationApply || mf.FieldsV1 == nil {
			continue
		}
		var tree struct {
			Spec struct {
				PluginConfig map[string]json.RawMessage `json:"f:pluginConfig"`
			} `json:"f:spec"`
		}
		if err := json.Unmarshal(mf.FieldsV1.Raw, &tree); err != nil {
			return false
		}
		for k := range tree.Spec.PluginConfig {
			if key, ok := strings.CutPrefix(k, "f:"); ok {
				if _, sent := want[key]; !sent {
					return false
				}
			}
		}
	}
	return true
}

// objectSize is the length of wp as JSON with pluginConfig replaced,
// without managedFields (the server adds its own few hundred bytes).
func objectSize(wp *extv1alpha1.WasmPlugin, pluginConfig map[string]any) (int, error) {
	c := wp.DeepCopy()
	c.ManagedFields = nil
	c.Spec.PluginConfig = nil
	b, err := json.Marshal(c)
	if err != nil {
		return 0, fmt.Errorf("measuring WasmPlugin %s/%s: %w", wp.Namespace, wp.Name, err)
	}
	pc, err := json.Marshal(pluginConfig)
	if err != nil {
		return 0, err
	}
	return len(b) + len(pc) + len(`,"pluginConfig":`), nil
}

// modelSHA is the sha256 of a base64 model in a pluginConfig, "" if none.
func modelSHA(v any) string {
	s, _ := v.(string)
	raw, err := base64.StdEncoding.DecodeString(s)
	if s == "" || err != nil {
		return ""
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// event records an events.k8s.io/v1 Event on the WasmPlugin. A failure is
// logged, never returned: the write itself has happened.
func (w *Writer) event(ctx context.Context, wp *extv1alpha1.WasmPlugin, typ, reason, action, note string) {
	if len(note) > 1024 {
		note = note[:1024]
	}
	now := time.Now()
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", wp.Name, now.UnixNano()), Namespace: wp.Namespace},
		EventTime:  metav1.NewMicroTime(now),
		Regarding: corev1.ObjectReference{APIVersion: "extensions.istio.io/v1alpha1", Kind: "WasmPlugin",
			Namespace: wp.Namespace, Name: wp.Name, UID: wp.UID, ResourceVersion: wp.ResourceVersion},
		Type: typ, Reason: reason, Action: action, Note: note,
		ReportingController: "meshward.io/control-plane", ReportingInstance: w.cfg.Identity,
	}
	if _, err := w.kc.EventsV1().Events(wp.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		w.log.Warn("wasmplugin: recording the Event failed", "wasmplugin", w.Ref(), "reason", reason, "err", err)
	}
}

// Source is where the model in force is read (store.Store).
type Source interface {
	Current(ctx context.Context) (string, error)
	Model(ctx context.Context, sha string) ([]byte, error)
}

// Syncer keeps the WasmPlugin on the model in force, on the leader only.
type Syncer struct {
	W   *Writer
	Src Source
	// Leading says whether this replica leads; only the leader writes.
	Leading func() bool

	mu      sync.Mutex
	sha     string // the model cached below
	model   []byte
	refused string // a model refused already (reported once)
}

// Sync writes the model in force when this replica leads and the
// WasmPlugin lacks it. Nothing in force yet is not an error. A model
// refused once (too large, or refused by the filter's parser) is not
// retried until the model in force changes.
func (s *Syncer) Sync(ctx context.Context) (Result, error) {
	if s.Leading != nil && !s.Leading() {
		return Result{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sha, err := s.Src.Current(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("wasmplugin: reading the model in force: %w", err)
	}
	if sha == "" || sha == s.refused {
		return Result{}, nil
	}
	if sha != s.sha {
		b, err := s.Src.Model(ctx, sha)
		if err != nil {
			return Result{}, fmt.Errorf("wasmplugin: reading model %.12s: %w", sha, err)
		}
		s.sha, s.model = sha, b
	}
	r, err := s.W.Apply(ctx, sha, s.model)
	if err != nil && (errors.Is(err, ErrTooLarge) || errors.Is(err, ErrRefused)) {
		s.refused = sha
	}
	return r, err
}
