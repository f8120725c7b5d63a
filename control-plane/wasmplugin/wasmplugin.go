// Package wasmplugin delivers the model to Istio sidecars through
// WasmPlugins, for installs where Istio (not meshward's xDS server) delivers
// the filter (manifests/istio/). A WasmPlugin gives every workload it
// selects the same configuration, and a filter takes only its own
// workload's section of the model, so meshward keeps one WasmPlugin per
// workload: no object grows with the mesh.
//
// The installer's WasmPlugin (-wasmplugin namespace/name,
// manifests/istio/base) is the template: the module (url, sha256), phase,
// priority, failStrategy, match and the user's pluginConfig keys (mode,
// collector_cluster, sample_rate, ...). It selects no workload itself (its
// selector is meshward.io/template: "true", a label no pod carries). For
// every workload of its namespace — each Deployment, StatefulSet and
// DaemonSet, selected by its own spec.selector.matchLabels — the leader
// server-side applies (field manager "meshward") a WasmPlugin
// meshward-<workload>: the template's spec with that selector, and a
// pluginConfig of the template's keys plus "workload" and "model", the
// workload's section of the model in force (its own, or the fallback). A
// workload without a section yet (no model in force) gets its plugin in
// learn mode, so it ships the samples the first model is trained on. The
// objects are labelled app.kubernetes.io/managed-by=meshward and
// meshward.io/template=<template>; one whose workload is gone is deleted.
// It never writes a credential: the collector authenticates sidecars by
// their mTLS identity.
//
// A template attached by targetRefs (ambient mode: the namespace's
// waypoint) selects one workload, the waypoint: meshward writes that
// workload's section into the template itself, owning only the keys it
// sends ("model", "workload").
//
// Nothing is written that the filter's own parser (filter/pluginconfig)
// refuses, or that takes an object over its budget; a write happens only
// when what meshward owns differs (an annotation holds its digest), each is
// logged as an audit line and recorded as a Kubernetes Event. A WasmPlugin
// cannot split a workload's pods into shares, so there is no canary on this
// path: meshward writes the release in force only.
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
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
)

// FieldManager is the server-side apply field manager of every write.
const FieldManager = "meshward"

// Labels and annotations of the WasmPlugins meshward owns.
const (
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	LabelTemplate   = "meshward.io/template"
	LabelWorkload   = "meshward.io/workload"
	AnnotationOwned = "meshward.io/owned-sha256"
	// AnnotationWorkload holds the workload's full name (the label holds a
	// digest of names longer than a label value may be).
	AnnotationWorkload = "meshward.io/workload"
	// TemplateSelectorValue is the value of LabelTemplate in a template's
	// selector: no pod carries it, so the template itself selects nothing.
	TemplateSelectorValue = "true"
)

// GVR is the WasmPlugin resource.
var GVR = schema.GroupVersionResource{Group: "extensions.istio.io", Version: "v1alpha1", Resource: "wasmplugins"}

// DefaultMaxObjectBytes is the budget of one WasmPlugin (as JSON). etcd
// refuses values over 1.5 MiB; a section within the trainer's budget
// (64 KiB) makes an object of about 90 KB.
const DefaultMaxObjectBytes = 1 << 20

// DefaultMaxWritesPerSync bounds the writes of one Sync: a retrain of a
// large mesh is written over a few ticks rather than in one long one.
const DefaultMaxWritesPerSync = 200

// ErrTooLarge is wrapped by the error of a section that would not fit.
var ErrTooLarge = errors.New("the model section is too large for a WasmPlugin object")

// ErrRefused is wrapped by the error of a configuration the filter's own
// parser refuses; nothing is written.
var ErrRefused = errors.New("the filter would refuse this pluginConfig")

// ErrTemplate is wrapped by the errors of a template meshward cannot use.
var ErrTemplate = errors.New("the WasmPlugin template")

// Config says which WasmPlugin is the template and what meshward writes
// besides the sections.
type Config struct {
	// Namespace and Name of the template (ParseRef reads "ns/name").
	Namespace, Name string
	// Base holds keys written beside the template's (when set: the
	// collector cluster and token given to the control plane); Model,
	// Workload and Mode are meshward's.
	Base pluginconfig.Config
	// MaxObjectBytes bounds one WasmPlugin (default DefaultMaxObjectBytes).
	MaxObjectBytes int
	// MaxWritesPerSync bounds the writes of one Sync (default
	// DefaultMaxWritesPerSync).
	MaxWritesPerSync int
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

// Source is where the release in force is read (the store).
type Source interface {
	// Current returns the version in force ("" when none).
	Current(ctx context.Context) (string, error)
	// ReleaseSections returns a version's sections: workload → sha256
	// (models.GlobalWorkload: the fallback).
	ReleaseSections(ctx context.Context, version string) (map[string]string, error)
	// Section returns an encoded section.
	Section(ctx context.Context, workload, sha string) ([]byte, error)
}

// Writer keeps the WasmPlugins of a template's workloads on the release in
// force.
type Writer struct {
	cfg Config
	dc  dynamic.Interface
	kc  kubernetes.Interface
	md  metadata.Interface
	log *slog.Logger
}

// New builds a writer reaching the API server through rc.
func New(cfg Config, rc *rest.Config, log *slog.Logger) (*Writer, error) {
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("wasmplugin: dynamic client: %w", err)
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("wasmplugin: Kubernetes client: %w", err)
	}
	md, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("wasmplugin: metadata client: %w", err)
	}
	return NewForClients(cfg, dc, kc, md, log)
}

// NewForClients builds a writer on given clients.
func NewForClients(cfg Config, dc dynamic.Interface, kc kubernetes.Interface, md metadata.Interface, log *slog.Logger) (*Writer, error) {
	if cfg.Namespace == "" || cfg.Name == "" {
		return nil, errors.New("wasmplugin: namespace and name are required")
	}
	if cfg.MaxObjectBytes <= 0 {
		cfg.MaxObjectBytes = DefaultMaxObjectBytes
	}
	if cfg.MaxWritesPerSync <= 0 {
		cfg.MaxWritesPerSync = DefaultMaxWritesPerSync
	}
	if cfg.Identity == "" {
		cfg.Identity = "meshward"
	}
	if len(cfg.Identity) > 128 {
		cfg.Identity = cfg.Identity[:128]
	}
	cfg.Base.Model, cfg.Base.Workload, cfg.Base.Mode = "", "", ""
	return &Writer{cfg: cfg, dc: dc, kc: kc, md: md, log: log}, nil
}

// Ref is "namespace/name" of the template.
func (w *Writer) Ref() string { return w.cfg.Namespace + "/" + w.cfg.Name }

// Target is one workload and the WasmPlugin that carries its section.
type Target struct {
	// Workload is the filter's workload name ("name.namespace").
	Workload string
	// Object is the WasmPlugin's name; Selector its workload selector
	// (nil for the template itself, attached by targetRefs).
	Object   string
	Selector map[string]string
}

// Result is what Sync did.
type Result struct {
	// Targets is the number of workloads served; Written, Deleted and
	// Unchanged count the WasmPlugins written, deleted and left as they
	// were; Deferred those left for the next Sync (MaxWritesPerSync).
	Targets, Written, Deleted, Unchanged, Deferred int
	// LargestObject is the size (JSON) of the largest object written or
	// checked.
	LargestObject int
	// Errors are the targets refused (too large, refused by the filter's
	// parser), by workload; the others are written.
	Errors []error
}

// owned is the pluginConfig a workload's filter gets: the template's keys,
// the base's, the workload and its section (or learn mode without one).
func (w *Writer) owned(tpl map[string]any, workload string, section []byte) (map[string]any, error) {
	pc := map[string]any{}
	for k, v := range tpl {
		pc[k] = v
	}
	base, err := w.cfg.Base.Encode()
	if err != nil {
		return nil, err
	}
	var bm map[string]any
	if err := json.Unmarshal(base, &bm); err != nil {
		return nil, err
	}
	for k, v := range bm {
		pc[k] = v
	}
	pc["workload"] = workload
	delete(pc, "model")
	if section != nil {
		pc["model"] = base64.StdEncoding.EncodeToString(section)
	} else if m, _ := pc["mode"].(string); m != "" && m != string(pluginconfig.ModeLearn) {
		// No model yet: learn, so that it ships what the first model is
		// trained on (monitor and enforce need a model).
		pc["mode"] = string(pluginconfig.ModeLearn)
	}
	doc, err := json.Marshal(pc)
	if err != nil {
		return nil, err
	}
	if _, err := pluginconfig.Parse(doc, workload); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return pc, nil
}

// objectName is the WasmPlugin of a workload (DNS subdomain, 253 at most).
func objectName(template, workload string) string {
	n := template + "-" + strings.ToLower(workload)
	if len(n) <= 253 && validName(n) {
		return n
	}
	sum := sha256.Sum256([]byte(workload))
	return template + "-" + hex.EncodeToString(sum[:10])
}

func validName(n string) bool {
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return n != "" && n[0] != '-' && n[len(n)-1] != '-'
}

// labelValue is a workload as a label value (63 characters at most).
func labelValue(workload string) string {
	if len(workload) <= 63 && validLabel(workload) {
		return workload
	}
	sum := sha256.Sum256([]byte(workload))
	return hex.EncodeToString(sum[:16])
}

func validLabel(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// targets lists the workloads of the template: its namespace's
// Deployments, StatefulSets and DaemonSets, or the one its targetRefs
// attach it to.
func (w *Writer) targets(ctx context.Context, tpl *unstructured.Unstructured) ([]Target, error) {
	ns := tpl.GetNamespace()
	spec, _ := tpl.Object["spec"].(map[string]any)
	if refs, _ := spec["targetRefs"].([]any); len(refs) > 0 {
		if len(refs) > 1 {
			return nil, fmt.Errorf("%w %s is attached to %d targets: a filter takes one workload's section, so attach it to one (the waypoint)", ErrTemplate, w.Ref(), len(refs))
		}
		ref, _ := refs[0].(map[string]any)
		name, _ := ref["name"].(string)
		if name == "" {
			return nil, fmt.Errorf("%w %s: its targetRef has no name", ErrTemplate, w.Ref())
		}
		return []Target{{Workload: name + "." + ns, Object: tpl.GetName()}}, nil
	}
	sel, _ := spec["selector"].(map[string]any)
	ml, _ := sel["matchLabels"].(map[string]any)
	if len(ml) != 1 || ml[LabelTemplate] != TemplateSelectorValue {
		return nil, fmt.Errorf(`%w %s selects workloads itself (selector %v): meshward gives each workload a WasmPlugin of its own, so the template must select none — set its spec.selector.matchLabels to {%s: "%s"} (manifests/istio/base), or attach it to a waypoint by targetRefs`,
			ErrTemplate, w.Ref(), ml, LabelTemplate, TemplateSelectorValue)
	}
	var out []Target
	add := func(kind, name string, s *metav1.LabelSelector) {
		if s == nil || len(s.MatchLabels) == 0 || len(s.MatchExpressions) > 0 {
			// A WasmPlugin selects by labels only.
			w.log.Warn("wasmplugin: a workload whose selector is not matchLabels only gets no WasmPlugin", "kind", kind, "namespace", ns, "name", name)
			return
		}
		wl := name + "." + ns
		out = append(out, Target{Workload: wl, Object: objectName(tpl.GetName(), name), Selector: s.MatchLabels})
	}
	apps := w.kc.AppsV1()
	deps, err := apps.Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the Deployments of %s: %w", ns, err)
	}
	for _, d := range deps.Items {
		add("Deployment", d.Name, d.Spec.Selector)
	}
	sts, err := apps.StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the StatefulSets of %s: %w", ns, err)
	}
	for _, s := range sts.Items {
		add("StatefulSet", s.Name, s.Spec.Selector)
	}
	dss, err := apps.DaemonSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the DaemonSets of %s: %w", ns, err)
	}
	for _, d := range dss.Items {
		add("DaemonSet", d.Name, d.Spec.Selector)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Workload < out[b].Workload })
	return out, nil
}

// desired is the WasmPlugin meshward applies for a target.
func (w *Writer) desired(tpl *unstructured.Unstructured, t Target, pc map[string]any) map[string]any {
	spec := map[string]any{}
	if t.Selector == nil {
		spec["pluginConfig"] = pc
	} else {
		tspec, _ := tpl.Object["spec"].(map[string]any)
		for k, v := range tspec {
			switch k {
			case "selector", "targetRefs", "targetRef", "pluginConfig":
			default:
				spec[k] = v
			}
		}
		sel := map[string]any{}
		for k, v := range t.Selector {
			sel[k] = v
		}
		spec["selector"] = map[string]any{"matchLabels": sel}
		spec["pluginConfig"] = pc
	}
	sum, _ := json.Marshal(spec)
	digest := sha256.Sum256(sum)
	meta := map[string]any{"name": t.Object, "namespace": tpl.GetNamespace(),
		"annotations": map[string]any{AnnotationOwned: hex.EncodeToString(digest[:])}}
	if t.Selector != nil {
		meta["labels"] = map[string]any{LabelManagedBy: FieldManager, LabelTemplate: tpl.GetName(), LabelWorkload: labelValue(t.Workload)}
		meta["annotations"].(map[string]any)[AnnotationWorkload] = t.Workload
	}
	return map[string]any{"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin", "metadata": meta, "spec": spec}
}

// Source reads of one release, cached by version.
type release struct {
	version  string
	sections map[string]string
	encoded  map[string][]byte // by sha
}

// Syncer keeps the WasmPlugins on the release in force, on the leader only.
type Syncer struct {
	W   *Writer
	Src Source
	// Leading says whether this replica leads; only the leader writes.
	Leading func() bool
	// Overlay, when set, gives each workload's exceptions (overlay.go).
	Overlay Overlay
	// Mode, when set, gives the mode a workload runs in instead of its
	// template's (overlay.go): serve -filter-learn-first's learn or monitor
	// while its section is not ready for more.
	Mode ModeOverlay

	mu      sync.Mutex
	rel     *release
	refused map[string]string // workload → owned digest refused already
}

// Sync writes, when this replica leads, every WasmPlugin of the template's
// workloads that lacks its section of the release in force (or learn mode
// before any), and deletes those of workloads gone. A target refused (too
// large, or refused by the filter's parser) is reported in Result.Errors,
// once per section, and left as it was; the others are written.
func (s *Syncer) Sync(ctx context.Context) (Result, error) {
	var res Result
	if s.Leading != nil && !s.Leading() {
		return res, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.W
	tpl, err := w.dc.Resource(GVR).Namespace(w.cfg.Namespace).Get(ctx, w.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return res, fmt.Errorf("WasmPlugin %s not found: install it first (kubectl apply --server-side -k manifests/istio/base); meshward writes a WasmPlugin per workload from it", w.Ref())
	}
	if err != nil {
		return res, fmt.Errorf("reading WasmPlugin %s: %w", w.Ref(), err)
	}
	targets, err := w.targets(ctx, tpl)
	if err != nil {
		return res, err
	}
	res.Targets = len(targets)
	if err := s.loadRelease(ctx); err != nil {
		return res, err
	}
	tplConfig, _, _ := unstructured.NestedMap(tpl.Object, "spec", "pluginConfig")
	if len(targets) == 1 && targets[0].Selector == nil {
		return s.syncAttached(ctx, tpl, targets[0], tplConfig, res)
	}
	applied, err := w.managed(ctx, tpl)
	if err != nil {
		return res, err
	}
	if s.refused == nil {
		s.refused = map[string]string{}
	}
	want := map[string]bool{}
	for _, t := range targets {
		want[t.Object] = true
		section, sha, err := s.section(ctx, t.Workload)
		if err != nil {
			return res, err
		}
		pc, err := w.owned(tplConfig, t.Workload, section)
		if err == nil {
			pc, err = s.withOverlay(pc, t.Workload)
		}
		if err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("workload %s: %w", t.Workload, err))
			continue
		}
		obj := w.desired(tpl, t, pc)
		digest := obj["metadata"].(map[string]any)["annotations"].(map[string]any)[AnnotationOwned].(string)
		if applied[t.Object] == digest {
			res.Unchanged++
			continue
		}
		body, err := json.Marshal(obj)
		if err != nil {
			return res, err
		}
		res.LargestObject = max(res.LargestObject, len(body))
		if len(body) > w.cfg.MaxObjectBytes {
			if s.refused[t.Workload] != digest {
				s.refused[t.Workload] = digest
				err := fmt.Errorf("workload %s, section %.12s: %w: the WasmPlugin %s would be %d bytes, over the budget of %d (etcd refuses objects over 1.5 MiB); its WasmPlugin is unchanged. Lower -max-section-bytes, or roll out by ECDS (manifests/istio-ecds)",
					t.Workload, sha, ErrTooLarge, t.Object, len(body), w.cfg.MaxObjectBytes)
				w.event(ctx, tpl.GetNamespace(), tpl.GetName(), string(tpl.GetUID()), corev1.EventTypeWarning, "ModelTooLarge", "RefuseModel", err.Error())
				res.Errors = append(res.Errors, err)
			}
			continue
		}
		if res.Written >= w.cfg.MaxWritesPerSync {
			res.Deferred++
			continue
		}
		out, err := w.apply(ctx, t.Object, body)
		if err != nil {
			return res, fmt.Errorf("server-side apply of the WasmPlugin of %s: %w", t.Workload, err)
		}
		res.Written++
		w.log.Info("wasmplugin: model written", "audit", true, "wasmplugin", tpl.GetNamespace()+"/"+t.Object, "workload", t.Workload,
			"section_sha256", sha, "mode", pc["mode"], "object_bytes", len(body), "resource_version", out.GetResourceVersion(), "field_manager", FieldManager)
		note := fmt.Sprintf("meshward wrote the section %.12s of workload %s (mode %v) into spec.pluginConfig", sha, t.Workload, pc["mode"])
		if sha == "" {
			note = fmt.Sprintf("meshward wrote the configuration of workload %s, in learn mode until a model is in force", t.Workload)
		}
		w.event(ctx, out.GetNamespace(), out.GetName(), string(out.GetUID()), corev1.EventTypeNormal, "ModelApplied", "ApplyModel", note)
	}
	for name := range applied {
		if want[name] {
			continue
		}
		err := w.dc.Resource(GVR).Namespace(tpl.GetNamespace()).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return res, fmt.Errorf("deleting the WasmPlugin %s/%s of a workload gone: %w", tpl.GetNamespace(), name, err)
		}
		res.Deleted++
		w.log.Info("wasmplugin: deleted, its workload is gone", "audit", true, "wasmplugin", tpl.GetNamespace()+"/"+name, "field_manager", FieldManager)
	}
	return res, nil
}

// loadRelease reads the release in force, when it changed.
func (s *Syncer) loadRelease(ctx context.Context) error {
	v, err := s.Src.Current(ctx)
	if err != nil {
		return fmt.Errorf("wasmplugin: reading the model in force: %w", err)
	}
	if v == "" {
		s.rel = nil
		return nil
	}
	if s.rel != nil && s.rel.version == v {
		return nil
	}
	secs, err := s.Src.ReleaseSections(ctx, v)
	if err != nil {
		return fmt.Errorf("wasmplugin: reading release %.12s: %w", v, err)
	}
	s.rel = &release{version: v, sections: secs, encoded: map[string][]byte{}}
	return nil
}

// section is a workload's section of the release in force (its own, else
// the fallback; nil before any model).
func (s *Syncer) section(ctx context.Context, workload string) ([]byte, string, error) {
	if s.rel == nil {
		return nil, "", nil
	}
	name := workload
	sha, ok := s.rel.sections[name]
	if !ok {
		name = models.GlobalWorkload
		if sha, ok = s.rel.sections[name]; !ok {
			return nil, "", nil
		}
	}
	if b, ok := s.rel.encoded[sha]; ok {
		return b, sha, nil
	}
	b, err := s.Src.Section(ctx, name, sha)
	if err != nil {
		return nil, "", fmt.Errorf("wasmplugin: reading the section %.12s of %s: %w", sha, name, err)
	}
	s.rel.encoded[sha] = b
	return b, sha, nil
}

// managed lists the WasmPlugins meshward made from the template, by name,
// with the digest of what it applied (metadata only: their specs are not
// read).
func (w *Writer) managed(ctx context.Context, tpl *unstructured.Unstructured) (map[string]string, error) {
	list, err := w.md.Resource(GVR).Namespace(tpl.GetNamespace()).List(ctx, metav1.ListOptions{
		LabelSelector: LabelManagedBy + "=" + FieldManager + "," + LabelTemplate + "=" + tpl.GetName()})
	if err != nil {
		return nil, fmt.Errorf("listing the WasmPlugins meshward made from %s: %w", w.Ref(), err)
	}
	out := make(map[string]string, len(list.Items))
	for _, o := range list.Items {
		out[o.Name] = o.Annotations[AnnotationOwned]
	}
	return out, nil
}

// apply server-side applies a WasmPlugin meshward owns.
func (w *Writer) apply(ctx context.Context, name string, body []byte) (*unstructured.Unstructured, error) {
	force := true
	return w.dc.Resource(GVR).Namespace(w.cfg.Namespace).Patch(ctx, name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: FieldManager, Force: &force})
}

// syncAttached writes the waypoint's section into a template attached by
// targetRefs, owning only the keys it sends.
func (s *Syncer) syncAttached(ctx context.Context, tpl *unstructured.Unstructured, t Target, tplConfig map[string]any, res Result) (Result, error) {
	w := s.W
	section, sha, err := s.section(ctx, t.Workload)
	if err != nil || section == nil {
		// Before any model the template, as installed, is the filter's
		// configuration (learn mode).
		return res, err
	}
	pc, err := w.owned(tplConfig, t.Workload, section)
	if err == nil {
		pc, err = s.withOverlay(pc, t.Workload)
	}
	if err != nil {
		res.Errors = append(res.Errors, fmt.Errorf("workload %s: %w", t.Workload, err))
		return res, nil
	}
	// Only the keys meshward sets, not the template's own.
	send := map[string]any{"workload": pc["workload"]}
	for _, k := range []string{"model", "exceptions"} {
		if m, ok := pc[k]; ok {
			send[k] = m
		}
	}

	for k := range w.baseKeys() {
		send[k] = pc[k]
	}
	if holds(tplConfig, send) && ownsOnly(tpl, send) {
		res.Unchanged++
		return res, nil
	}
	next := map[string]any{}
	for k, v := range tplConfig {
		next[k] = v
	}
	for k, v := range send {
		next[k] = v
	}
	size, err := objectSize(tpl, next)
	if err != nil {
		return res, err
	}
	res.LargestObject = size
	if size > w.cfg.MaxObjectBytes {
		err := fmt.Errorf("workload %s, section %.12s: %w: the WasmPlugin %s would be %d bytes, over the budget of %d (etcd refuses objects over 1.5 MiB); it is unchanged",
			t.Workload, sha, ErrTooLarge, w.Ref(), size, w.cfg.MaxObjectBytes)
		if s.refused[t.Workload] != sha {
			if s.refused == nil {
				s.refused = map[string]string{}
			}
			s.refused[t.Workload] = sha
			w.event(ctx, tpl.GetNamespace(), tpl.GetName(), string(tpl.GetUID()), corev1.EventTypeWarning, "ModelTooLarge", "RefuseModel", err.Error())
			res.Errors = append(res.Errors, err)
		}
		return res, nil
	}
	body, err := json.Marshal(map[string]any{"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
		"metadata": map[string]any{"name": tpl.GetName(), "namespace": tpl.GetNamespace()}, "spec": map[string]any{"pluginConfig": send}})
	if err != nil {
		return res, err
	}
	out, err := w.apply(ctx, tpl.GetName(), body)
	if err != nil {
		return res, fmt.Errorf("server-side apply of the section %.12s to WasmPlugin %s: %w", sha, w.Ref(), err)
	}
	res.Written++
	w.log.Info("wasmplugin: model written", "audit", true, "wasmplugin", w.Ref(), "workload", t.Workload, "section_sha256", sha,
		"object_bytes", size, "resource_version", out.GetResourceVersion(), "field_manager", FieldManager)
	w.event(ctx, out.GetNamespace(), out.GetName(), string(out.GetUID()), corev1.EventTypeNormal, "ModelApplied", "ApplyModel",
		fmt.Sprintf("meshward wrote the section %.12s of workload %s into spec.pluginConfig", sha, t.Workload))
	return res, nil
}

// baseKeys are the pluginConfig keys the base configuration sets.
func (w *Writer) baseKeys() map[string]bool {
	b, _ := w.cfg.Base.Encode()
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
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
// sends needs a write: server-side apply then removes it.
func ownsOnly(wp *unstructured.Unstructured, want map[string]any) bool {
	for _, mf := range wp.GetManagedFields() {
		if mf.Manager != FieldManager || mf.Operation != metav1.ManagedFieldsOperationApply || mf.FieldsV1 == nil {
			continue
		}
		var tree struct {
			Spec struct {
				PluginConfig map[string]json.RawMessage `json:"f:pluginConfig"`
			} `json:"f:spec"`
		}
		if err := json.Unmarshal(mf.FieldsV1.GetRawBytes(), &tree); err != nil {
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
func objectSize(wp *unstructured.Unstructured, pluginConfig map[string]any) (int, error) {
	c := wp.DeepCopy()
	c.SetManagedFields(nil)
	if err := unstructured.SetNestedMap(c.Object, map[string]any{}, "spec", "pluginConfig"); err != nil {
		return 0, err
	}
	b, err := json.Marshal(c.Object)
	if err != nil {
		return 0, fmt.Errorf("measuring WasmPlugin %s/%s: %w", wp.GetNamespace(), wp.GetName(), err)
	}
	pc, err := json.Marshal(pluginConfig)
	if err != nil {
		return 0, err
	}
	return len(b) + len(pc) - 2, nil
}

// event records an events.k8s.io/v1 Event on a WasmPlugin. A failure is
// logged, never returned: the write itself has happened.
func (w *Writer) event(ctx context.Context, ns, name, uid, typ, reason, action, note string) {
	if len(note) > 1024 {
		note = note[:1024]
	}
	now := time.Now()
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%.200s.%x", name, now.UnixNano()), Namespace: ns},
		EventTime:  metav1.NewMicroTime(now),
		Regarding: corev1.ObjectReference{APIVersion: "extensions.istio.io/v1alpha1", Kind: "WasmPlugin",
			Namespace: ns, Name: name, UID: types.UID(uid)},
		Type: typ, Reason: reason, Action: action, Note: note,
		ReportingController: "meshward.io/control-plane", ReportingInstance: w.cfg.Identity,
	}
	if _, err := w.kc.EventsV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		w.log.Warn("wasmplugin: recording the Event failed", "wasmplugin", ns+"/"+name, "reason", reason, "err", err)
	}
}
