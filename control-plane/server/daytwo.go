package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/control-plane/auth"
	"github.com/meshward/meshward/control-plane/exception"
	"github.com/meshward/meshward/control-plane/internal/metric"
	"github.com/meshward/meshward/control-plane/preview"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/control-plane/trainer"
	"github.com/meshward/meshward/control-plane/xds"
	"github.com/meshward/meshward/filter/enforcement"
	"github.com/meshward/meshward/filter/pluginconfig"
	"github.com/meshward/meshward/models"
	"github.com/meshward/meshward/models/record"
)

// Day two: the exceptions operators grant (meshward allow), what each
// workload's readiness allows under -filter-learn-first, and the preview
// of enforce mode. Exceptions live in the store; every replica polls
// their version (ExceptionPoll) and, when it moved, serves each workload's
// filters their rules with the next xDS update (and, on the leader, the
// next WasmPlugin write); the replica that took a change applies it at
// once. The leader deletes expired exceptions; the filters ignore them on
// their own clock meanwhile.

// Metric names of day two.
const (
	MetricExceptions        = "meshward_exceptions"
	MetricExceptionChanges  = "meshward_exception_changes_total"
	MetricWorkloadReadiness = "meshward_workload_readiness"
	MetricPreviewDecisions  = "meshward_preview_decisions_total"
)

// ExceptionPoll is how often a replica checks whether the exceptions
// changed (on another replica).
const ExceptionPoll = 500 * time.Millisecond

// dayTwo is the server's day-two state.
type dayTwo struct {
	mu         sync.Mutex // serializes reloads
	exceptions atomic.Pointer[exceptionState]
	ready      atomic.Pointer[readyState]
	// wasmDirty asks the leader to write the WasmPlugins again.
	wasmDirty atomic.Bool
	changes   *prometheus.CounterVec
	decisions *prometheus.CounterVec
}

type exceptionState struct {
	version int64
	list    []exception.Exception
}

type readyState struct {
	version string // the release assessed
	by      map[string]trainer.Readiness
}

// Day two's metrics, listed by Metrics.
var (
	defExceptionChanges = metric.Def{Name: MetricExceptionChanges, Labels: []string{"action"},
		Help: "Changes to the exceptions made through this replica, by action (added, revoked, expired, refused)."}
	defPreviewDecisions = metric.Def{Name: MetricPreviewDecisions, Labels: []string{"kind", "reason"},
		Help: "Flagged requests the filters' records say enforce denies (kind deny: denied, or would be in monitor) or exceptions let through (kind saved), by reason, as this replica's collector received them."}
	defExceptions = metric.Def{Name: MetricExceptions, Labels: []string{"scope"}, Help: "Exceptions in force, by scope (workload, mesh)."}
	defReadiness  = metric.Def{Name: MetricWorkloadReadiness, Labels: []string{"workload", "verdict"},
		Help: "1 for each workload's readiness verdict (learning, ready for monitor, ready for enforce) as the last training round assessed the model in force."}
)

func dayTwoMetrics() []metric.Def {
	return []metric.Def{defExceptionChanges, defPreviewDecisions, defExceptions, defReadiness}
}

func (s *Server) newDayTwo() []prometheus.Collector {
	s.day.changes = defExceptionChanges.CounterVec()
	for _, a := range []string{"added", "revoked", "expired", "refused"} {
		s.day.changes.WithLabelValues(a)
	}
	s.day.decisions = defPreviewDecisions.CounterVec()
	return []prometheus.Collector{s.day.changes, s.day.decisions, dayTwoState{s, defExceptions.Desc(), defReadiness.Desc()}}
}

// countDecisions counts the decisions of a batch the store took.
func (s *Server) countDecisions(recs []record.Record) {
	for i := range recs {
		switch r := &recs[i]; {
		case r.Deny != "":
			s.day.decisions.WithLabelValues(store.KindDeny, r.Deny).Inc()
		case r.WouldDeny != "":
			s.day.decisions.WithLabelValues(store.KindSaved, r.WouldDeny).Inc()
		}
	}
}

// dayTwoState reads the exceptions and readiness at scrape time.
type dayTwoState struct {
	s                 *Server
	exceptions, ready *prometheus.Desc
}

func (c dayTwoState) Describe(ch chan<- *prometheus.Desc) { ch <- c.exceptions; ch <- c.ready }

func (c dayTwoState) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	var mesh, own int
	for _, e := range exception.Active(c.s.exceptionList(), now) {
		if e.Workload == enforcement.Mesh {
			mesh++
		} else {
			own++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.exceptions, prometheus.GaugeValue, float64(own), "workload")
	ch <- prometheus.MustNewConstMetric(c.exceptions, prometheus.GaugeValue, float64(mesh), "mesh")
	if rs := c.s.day.ready.Load(); rs != nil {
		for w, r := range rs.by {
			ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, 1, w, r.Verdict)
		}
	}
}

// exceptionList is the exceptions this replica serves.
func (s *Server) exceptionList() []exception.Exception {
	if st := s.day.exceptions.Load(); st != nil {
		return st.list
	}
	return nil
}

// reloadExceptions reads the exceptions when their version moved (always
// when force), and serves them. It reports whether they changed.
func (s *Server) reloadExceptions(ctx context.Context, force bool) (bool, error) {
	s.day.mu.Lock()
	defer s.day.mu.Unlock()
	v, err := s.store.ExceptionsVersion(ctx)
	if err != nil {
		return false, err
	}
	if cur := s.day.exceptions.Load(); !force && cur != nil && cur.version == v {
		return false, nil
	}
	raw, err := s.store.Exceptions(ctx)
	if err != nil {
		return false, err
	}
	list, derr := exception.Decode(raw)
	if derr != nil {
		s.log.Warn("stored exceptions skipped", "err", derr)
	}
	s.day.exceptions.Store(&exceptionState{version: v, list: list})
	s.day.wasmDirty.Store(true)
	return true, s.applyOverlays()
}

// reloadReadiness reads the readiness of the release in force and, when
// it changed (a new release, or a round that left the release unchanged
// assessing it again), serves the modes it allows.
func (s *Server) reloadReadiness(ctx context.Context) error {
	sha, err := s.store.Current(ctx)
	if err != nil || sha == "" {
		return err
	}
	by, err := trainer.ReadinessOf(ctx, s.store, sha)
	if err != nil {
		s.log.Warn("stored readiness skipped", "err", err)
	}
	if cur := s.day.ready.Load(); cur != nil && cur.version == sha && sameVerdicts(cur.by, by) {
		return nil
	}
	s.day.ready.Store(&readyState{version: sha, by: by})
	s.day.wasmDirty.Store(true)
	return s.applyOverlays()
}

// sameVerdicts says whether two readiness maps give every workload the
// same verdict (what the modes served depend on).
func sameVerdicts(a, b map[string]trainer.Readiness) bool {
	if len(a) != len(b) {
		return false
	}
	for w, r := range a {
		if o, ok := b[w]; !ok || o.Verdict != r.Verdict || !o.At.Equal(r.At) {
			return false
		}
	}
	return true
}

// applyOverlays gives xDS every group's exceptions and mode.
func (s *Server) applyOverlays() error {
	if s.xds == nil {
		return nil
	}
	now := time.Now()
	list := s.exceptionList()
	ready := s.day.ready.Load()
	return s.xds.SetOverlays(func(g string) xds.Overlay {
		return xds.Overlay{Exceptions: exception.For(list, g, now), Mode: s.modeFor(g, ready, s.cfg.XDS.Base.Mode)}
	})
}

// modeFor is the mode a workload runs in when it is not base: under
// -filter-learn-first, learn until its section is ready for monitor, and
// monitor until it is ready for enforce.
func (s *Server) modeFor(workload string, ready *readyState, base pluginconfig.Mode) pluginconfig.Mode {
	if !s.cfg.XDS.LearnFirst || base == pluginconfig.ModeLearn {
		return ""
	}
	verdict := trainer.Learning
	if ready != nil {
		if r, ok := ready.by[workload]; ok {
			verdict = r.Verdict
		}
	}
	switch verdict {
	case trainer.ReadyForEnforce:
		return ""
	case trainer.ReadyForMonitor:
		if base == pluginconfig.ModeEnforce {
			return pluginconfig.ModeMonitor
		}
		return ""
	}
	return pluginconfig.ModeLearn
}

// wasmOverlay is what a workload's WasmPlugin carries beside its section:
// its exceptions.
func (s *Server) wasmOverlay(workload string) []enforcement.Rule {
	return exception.For(s.exceptionList(), workload, time.Now())
}

// wasmMode is the mode a workload's WasmPlugin runs in instead of its
// template's (base): under -filter-learn-first, learn until its section is
// ready for monitor and monitor until it is ready for enforce, as xDS
// serves it.
func (s *Server) wasmMode(workload string, base pluginconfig.Mode) pluginconfig.Mode {
	return s.modeFor(workload, s.day.ready.Load(), base)
}

// dayTwoLoop follows the exceptions and the readiness in the store, and on
// the leader deletes expired exceptions and writes the WasmPlugins again
// when either changed.
func (s *Server) dayTwoLoop(ctx context.Context) {
	t := time.NewTicker(ExceptionPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.reloadExceptions(ctx, false); err != nil && ctx.Err() == nil {
			s.log.Debug("exceptions not read; the filters keep theirs", "err", err)
		}
		if err := s.reloadReadiness(ctx); err != nil && ctx.Err() == nil {
			s.log.Debug("readiness not read", "err", err)
		}
		if s.elector.Leading() {
			s.expireExceptions(ctx, time.Now())
			if s.wasm != nil && s.day.wasmDirty.Swap(false) {
				s.syncWasmPlugin(ctx)
			}
		}
	}
}

// expireExceptions deletes the exceptions past their expiry, each an audit
// line and an Event.
func (s *Server) expireExceptions(ctx context.Context, now time.Time) {
	for _, e := range s.exceptionList() {
		if now.Before(e.Expires) {
			continue
		}
		gone, err := s.store.DeleteException(ctx, e.ID)
		if err != nil {
			s.log.Warn("an expired exception was not deleted; the filters ignore it anyway", "id", e.ID, "err", err)
			continue
		}
		if gone {
			s.day.changes.WithLabelValues("expired").Inc()
			s.exceptionChanged(ctx, "expired", &e, "meshward")
		}
	}
	if _, err := s.reloadExceptions(ctx, false); err != nil && ctx.Err() == nil {
		s.log.Debug("exceptions not read", "err", err)
	}
}

// exceptionChanged writes a change's audit line and Event.
func (s *Server) exceptionChanged(ctx context.Context, action string, e *exception.Exception, by string) {
	s.log.Info("exception "+action, "audit", true, "action", action, "id", e.ID, "workload", e.Workload, "what", e.Describe(),
		"author", e.Author, "reason", e.Reason, "expires", e.Expires.Format(time.RFC3339), "by", by)
	kc := s.cfg.Auth.Kube
	if kc == nil {
		return
	}
	// The Event goes in the control plane's namespace (where it may always
	// write), regarding the control plane's Lease there and related to the
	// namespace of the exception's workload (its own for a mesh-wide one).
	// It cannot regard the Namespace: the API server takes an Event about a
	// cluster-scoped object only in "default" or "kube-system".
	ns := s.cfg.LeaseNamespace
	related := ns
	if _, wns, ok := strings.Cut(e.Workload, "."); ok && e.Workload != enforcement.Mesh {
		related = wns[strings.LastIndexByte(wns, '.')+1:]
	}
	reason := map[string]string{"added": "ExceptionAdded", "revoked": "ExceptionRevoked", "expired": "ExceptionExpired"}[action]
	note := fmt.Sprintf("exception %s %s by %s: %s, until %s; reason: %s (author %s)", e.ID, action, by, e.Describe(), e.Expires.Format(time.RFC3339), e.Reason, e.Author)
	if len(note) > 1024 {
		note = note[:1024]
	}
	now := time.Now()
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", e.ID, now.UnixNano()), Namespace: ns,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "meshward", "meshward.io/exception": e.ID}},
		EventTime: metav1.NewMicroTime(now),
		Regarding: corev1.ObjectReference{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Namespace: ns, Name: s.cfg.LeaseName},
		Related:   &corev1.ObjectReference{APIVersion: "v1", Kind: "Namespace", Name: related},
		Type:      corev1.EventTypeNormal, Reason: reason, Action: strings.ToUpper(action[:1]) + action[1:] + "Exception", Note: note,
		ReportingController: "meshward.io/control-plane", ReportingInstance: s.identity(),
	}
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := kc.EventsV1().Events(ns).Create(ectx, ev, metav1.CreateOptions{}); err != nil {
		s.log.Warn("the exception's Event was not written (the audit line was)", "id", e.ID, "err", err)
	}
}

// identity names this replica in Events.
func (s *Server) identity() string {
	id := strings.TrimPrefix(s.AdminURL, "http://")
	if len(id) > 128 {
		id = id[:128]
	}
	return "meshward@" + id
}

// knownWorkload says whether meshward knows a workload: one with a
// section in the release in force, records in the store, or sidecars
// connected to this replica's xDS.
func (s *Server) knownWorkload(ctx context.Context) (func(string) bool, error) {
	known := map[string]bool{}
	dsts, err := s.store.Destinations(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range dsts {
		known[d] = true
	}
	if sha, err := s.store.Current(ctx); err == nil && sha != "" {
		if rel, err := s.store.Release(ctx, sha); err == nil {
			for w := range rel.Sections {
				known[w] = true
			}
		}
	}
	if s.xds != nil {
		for _, g := range s.xds.GroupNames() {
			known[g] = true
		}
	}
	return func(w string) bool { return known[w] && w != models.GlobalWorkload }, nil
}

// maxRequestBytes bounds an exception request's body.
const maxRequestBytes = 64 << 10

func (s *Server) dayTwoRoutes(mux *http.ServeMux) {
	mux.Handle("GET /api/v1/exceptions", s.guard(read(auth.Attributes{Verb: "list", Resource: "exceptions"}), func(w http.ResponseWriter, r *http.Request) {
		_, err := s.reloadExceptions(r.Context(), false)
		list := s.exceptionList()
		if list == nil {
			list = []exception.Exception{}
		}
		s.json(w, map[string]any{"exceptions": list}, err)
	}))
	mux.Handle("POST /api/v1/exceptions", s.guard(write(auth.Attributes{Verb: "create", Resource: "exceptions"}), func(w http.ResponseWriter, r *http.Request) {
		s.addException(w, r)
	}))
	revoke := func(r *http.Request) auth.Attributes {
		return auth.Attributes{Verb: "delete", Resource: "exceptions", Name: r.PathValue("id")}
	}
	mux.Handle("DELETE /api/v1/exceptions/{id}", s.guard(access{attrs: revoke, mutating: true}, func(w http.ResponseWriter, r *http.Request) {
		s.revokeException(w, r)
	}))
	mux.Handle("GET /api/v1/workloads", s.guard(read(auth.Attributes{Verb: "list", Resource: "workloads"}), func(w http.ResponseWriter, r *http.Request) {
		out, err := s.workloads(r.Context())
		s.json(w, map[string]any{"workloads": out}, err)
	}))
	mux.Handle("GET /api/v1/preview", s.guard(read(auth.Attributes{Verb: "get", Resource: "preview"}), func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if m := q.Get("mode"); m != "" && m != string(pluginconfig.ModeEnforce) {
			http.Error(w, "mode: only enforce can be previewed (monitor and learn deny nothing)", http.StatusBadRequest)
			return
		}
		since := 24 * time.Hour
		if v := q.Get("since"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				http.Error(w, fmt.Sprintf("since: %q is not a positive duration (24h, 90m)", v), http.StatusBadRequest)
				return
			}
			since = d
		}
		if _, err := s.reloadExceptions(r.Context(), false); err != nil {
			s.json(w, nil, err)
			return
		}
		now := time.Now()
		rep, err := preview.Build(r.Context(), s.store, now.Add(-since), now, q.Get("workload"), s.exceptionList())
		s.json(w, rep, err)
	}))
}

// refuseException answers 400 with every problem, each naming its field.
func (s *Server) refuseException(w http.ResponseWriter, status int, err error) {
	s.day.changes.WithLabelValues("refused").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	var problems []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if line != "" {
			problems = append(problems, line)
		}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"error": "exception refused", "problems": problems})
}

func (s *Server) addException(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := principal(r)
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	if err != nil || len(body) > maxRequestBytes {
		s.refuseException(w, http.StatusBadRequest, fmt.Errorf("the body must be a JSON object of at most %d bytes", maxRequestBytes))
		return
	}
	var req exception.Request
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.refuseException(w, http.StatusBadRequest, fmt.Errorf("not an exception: %v", err))
		return
	}
	known, err := s.knownWorkload(ctx)
	if err != nil {
		s.json(w, nil, err)
		return
	}
	author := "unknown"
	if p != nil {
		author = p.User
	}
	e, err := exception.New(req, author, time.Now(), known)
	if err != nil {
		s.refuseException(w, http.StatusBadRequest, err)
		return
	}
	enc, err := json.Marshal(e)
	if err != nil {
		s.json(w, nil, err)
		return
	}
	if err := s.store.PutException(ctx, e.ID, enc, s.cfg.MaxExceptions); err != nil {
		switch {
		case errors.Is(err, store.ErrExists):
			s.refuseException(w, http.StatusConflict, fmt.Errorf("%w: %q is taken", enforcement.ErrID, e.ID))
		case errors.Is(err, store.ErrTooMany):
			s.refuseException(w, http.StatusConflict, err)
		default:
			s.json(w, nil, err)
		}
		return
	}
	s.day.changes.WithLabelValues("added").Inc()
	s.exceptionChanged(ctx, "added", e, author)
	// Served at once by this replica; the others follow within a poll.
	if _, err := s.reloadExceptions(ctx, true); err != nil {
		s.log.Warn("the exception is stored; serving it waits for the next poll", "id", e.ID, "err", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(e)
}

func (s *Server) revokeException(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	if _, err := s.reloadExceptions(ctx, false); err != nil {
		s.json(w, nil, err)
		return
	}
	var found *exception.Exception
	for _, e := range s.exceptionList() {
		if e.ID == id {
			found = &e
			break
		}
	}
	gone, err := s.store.DeleteException(ctx, id)
	if err != nil {
		s.json(w, nil, err)
		return
	}
	if !gone {
		http.Error(w, "no such exception: "+id, http.StatusNotFound)
		return
	}
	by := "unknown"
	if p := principal(r); p != nil {
		by = p.User
	}
	if found == nil {
		found = &exception.Exception{Rule: enforcement.Rule{ID: id}}
	}
	s.day.changes.WithLabelValues("revoked").Inc()
	s.exceptionChanged(ctx, "revoked", found, by)
	if _, err := s.reloadExceptions(ctx, true); err != nil {
		s.log.Warn("the exception is revoked; serving that waits for the next poll", "id", id, "err", err)
	}
	s.json(w, map[string]any{"revoked": id}, nil)
}

// WorkloadStatus is one workload as GET /api/v1/workloads shows it: its
// readiness, the mode its filters are served, and its exceptions.
type WorkloadStatus struct {
	Workload   string             `json:"workload"`
	Readiness  *trainer.Readiness `json:"readiness,omitempty"`
	Mode       string             `json:"mode,omitempty"`
	Exceptions []string           `json:"exceptions"`
}

func (s *Server) workloads(ctx context.Context) ([]WorkloadStatus, error) {
	_, err := s.reloadExceptions(ctx, false)
	if rerr := s.reloadReadiness(ctx); rerr != nil {
		err = errors.Join(err, rerr)
	}
	known, kerr := s.knownWorkload(ctx)
	if kerr != nil {
		return nil, errors.Join(err, kerr)
	}
	names := map[string]bool{}
	ready := s.day.ready.Load()
	if ready != nil {
		for w := range ready.by {
			names[w] = true
		}
	}
	if s.xds != nil {
		for _, g := range s.xds.GroupNames() {
			names[g] = true
		}
	}
	now := time.Now()
	list := s.exceptionList()
	for _, e := range exception.Active(list, now) {
		if e.Workload != enforcement.Mesh && known(e.Workload) {
			names[e.Workload] = true
		}
	}
	out := []WorkloadStatus{}
	for w := range names {
		st := WorkloadStatus{Workload: w, Exceptions: []string{}}
		if ready != nil {
			if r, ok := ready.by[w]; ok {
				st.Readiness = &r
			}
		}
		if s.xds != nil {
			st.Mode = string(s.cfg.XDS.Base.Mode)
			if m := s.modeFor(w, ready, s.cfg.XDS.Base.Mode); m != "" {
				st.Mode = string(m)
			}
		}
		for _, rule := range exception.For(list, w, now) {
			st.Exceptions = append(st.Exceptions, rule.ID)
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Workload < out[j].Workload })
	return out, err
}

// PutExceptions stores rules as exceptions granted by author, without the
// admin API (meshward run's -exceptions), and serves them at once. Each
// must be well formed; one expired is stored and ignored, as the filters
// ignore it.
func (s *Server) PutExceptions(ctx context.Context, rules []enforcement.Rule, author string) error {
	now := time.Now()
	for i := range rules {
		if err := rules[i].CheckForm(); err != nil {
			return fmt.Errorf("[%d]: %w", i, err)
		}
		e := exception.Exception{Rule: rules[i], Author: author, Reason: "given to " + author, Created: now.UTC()}
		enc, err := json.Marshal(&e)
		if err != nil {
			return err
		}
		if err := s.store.PutException(ctx, e.ID, enc, s.cfg.MaxExceptions); err != nil {
			return fmt.Errorf("[%d]: %w", i, err)
		}
	}
	_, err := s.reloadExceptions(ctx, true)
	return err
}
