package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshward/meshward/control-plane/auth"
	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/identity"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/control-plane/trainer"
	"github.com/meshward/meshward/models/record"
)

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }

// Unwrap lets http.ResponseController reach the connection (the collector
// sets its read deadline through it).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// countBatches wraps the collector to count batches by status (the
// collector counts records itself, by outcome and refusal reason).
func (s *Server) countBatches(col *collector.Collector) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(record.Path, func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		col.ServeHTTP(rec, r)
		s.batches.WithLabelValues(strconv.Itoa(rec.code)).Inc()
	})
	return mux
}

// admin serves /healthz and /readyz (open: probes carry no credentials),
// /metrics (a bearer token: Prometheus' convention) and the JSON API, every
// route of which authenticates and authorizes its caller (see guard).
func (s *Server) admin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.rdb.Ping(ctx).Err(); err != nil {
			http.Error(w, "store unavailable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	metrics := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
	mux.Handle("/metrics", s.guard(read(auth.Attributes{Verb: "get", Path: "/metrics"}), metrics.ServeHTTP))
	if s.cfg.WasmFile != "" {
		// The module is public (the filter's image): Envoy's remote fetch
		// carries no credential.
		mux.HandleFunc("GET /wasm/meshward.wasm", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/wasm")
			http.ServeFile(w, r, s.cfg.WasmFile)
		})
	}
	mux.Handle("GET /api/v1/models/current", s.guard(read(auth.Attributes{Verb: "get", Resource: "models", Name: "current"}), func(w http.ResponseWriter, r *http.Request) {
		// The section a workload's sidecars receive from the release in
		// force (?workload=name.namespace; without it, the fallback), for
		// `meshward model config` and inspection.
		sha, err := s.store.Current(r.Context())
		if err == nil && sha == "" {
			http.Error(w, "no model in force yet", http.StatusNotFound)
			return
		}
		var b []byte
		var section string
		if err == nil {
			var rel *store.Release
			if rel, err = s.store.Release(r.Context(), sha); err == nil {
				name, ssha := rel.SectionFor(r.URL.Query().Get("workload"))
				if ssha == "" {
					http.Error(w, "the model in force has no section for this workload, nor a fallback", http.StatusNotFound)
					return
				}
				section = ssha
				b, err = s.store.Section(r.Context(), name, ssha)
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Meshward-Model-Sha256", sha)
		w.Header().Set("X-Meshward-Section-Sha256", section)
		_, _ = w.Write(b)
	}))
	mux.Handle("GET /api/v1/models", s.guard(read(auth.Attributes{Verb: "list", Resource: "models"}), func(w http.ResponseWriter, r *http.Request) {
		shas, err := s.store.Models(r.Context())
		cur, cerr := s.store.Current(r.Context())
		s.json(w, map[string]any{"models": shas, "current": cur}, errors.Join(err, cerr))
	}))
	mux.Handle("POST /api/v1/train", s.guard(write(auth.Attributes{Verb: "create", Resource: "models", Subresource: "train"}), func(w http.ResponseWriter, r *http.Request) {
		rep, err := s.train(r.Context())
		s.json(w, rep, err)
	}))
	mux.Handle("GET /api/v1/leader", s.guard(read(auth.Attributes{Verb: "get", Resource: "leader"}), func(w http.ResponseWriter, r *http.Request) {
		s.json(w, map[string]any{"leading": s.elector.Leading(), "election": s.election}, nil)
	}))
	mux.Handle("POST /api/v1/rollback", s.guard(write(auth.Attributes{Verb: "create", Resource: "models", Subresource: "rollback"}), func(w http.ResponseWriter, r *http.Request) {
		sha, err := trainer.Rollback(r.Context(), s.store)
		if err == nil {
			s.rollbacks.Inc()
			err = s.sync(r.Context())
		}
		s.json(w, map[string]any{"current": sha}, err)
	}))
	mux.Handle("GET /api/v1/rollouts", s.guard(read(auth.Attributes{Verb: "get", Resource: "rollouts"}), func(w http.ResponseWriter, r *http.Request) {
		cur, err := s.store.Current(r.Context())
		can, cerr := s.store.Canary(r.Context())
		decs, derr := s.store.Decisions(r.Context(), 20)
		out := map[string]any{"current": cur, "canary": can, "decisions": decs}
		if s.xds == nil {
			out["xds"] = "off (no wasm URI)"
		} else {
			out["version"], out["canary_version"], out["nacks"] = s.xds.Version(), s.xds.CanaryVersion(), s.xds.NACKs()
		}
		s.json(w, out, errors.Join(err, cerr, derr))
	}))
	mux.Handle("GET /api/v1/quarantines", s.guard(read(auth.Attributes{Verb: "list", Resource: "quarantines"}), func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Quarantine == nil {
			s.json(w, map[string]any{"quarantines": []any{}}, nil)
			return
		}
		// The standing quarantines, then those decided but not (wholly)
		// written yet, each with its last write's error ("pending"), and
		// how many decisions wait for a rate limit or cap to free.
		out := map[string]any{"quarantines": s.cfg.Quarantine.Standing()}
		if loop := s.loop.Load(); loop != nil {
			// A decision written in part stands and is pending: listed
			// once, with its error.
			list := loop.Pending()
			seen := map[string]bool{}
			for _, d := range list {
				seen[d.ID] = true
			}
			for _, d := range s.cfg.Quarantine.Standing() {
				if !seen[d.ID] {
					list = append(list, d)
				}
			}
			sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
			out["quarantines"] = list
			out["held"], _ = loop.Held()
		}
		s.json(w, out, nil)
	}))
	release := func(r *http.Request) auth.Attributes {
		return auth.Attributes{Verb: "create", Resource: "quarantines", Subresource: "release", Name: r.PathValue("id")}
	}
	mux.Handle("POST /api/v1/quarantines/{id}/release", s.guard(access{attrs: release, mutating: true}, func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if s.cfg.Quarantine == nil || !s.cfg.Quarantine.Holds(id) {
			http.Error(w, "no such quarantine: "+id, http.StatusNotFound)
			return
		}
		// The release is noted before the policies go: a leader that
		// replays the observation stream (this one, or the next after a
		// failover) does not quarantine the principal again on the
		// evidence the operator has just weighed.
		for _, d := range s.cfg.Quarantine.Standing() {
			if d.ID == id {
				if err := s.store.NoteRelease(r.Context(), d.Principal, time.Now()); err != nil {
					s.json(w, nil, fmt.Errorf("noting the release: %w", err))
					return
				}
			}
		}
		err := s.cfg.Quarantine.Release(r.Context(), id)
		s.json(w, map[string]any{"released": id}, err)
	}))
	mux.Handle("GET /api/v1/incidents", s.guard(read(auth.Attributes{Verb: "list", Resource: "incidents"}), func(w http.ResponseWriter, r *http.Request) {
		incs, err := s.store.Incidents(r.Context(), 100)
		s.json(w, map[string]any{"incidents": incs}, err)
	}))
	mux.Handle("GET /api/v1/edges", s.guard(read(auth.Attributes{Verb: "get", Resource: "edges"}), func(w http.ResponseWriter, r *http.Request) {
		dst := r.URL.Query().Get("destination")
		if dst == "" {
			http.Error(w, "destination= is required", http.StatusBadRequest)
			return
		}
		edges, err := s.store.Edges(r.Context(), dst, time.Now())
		s.json(w, map[string]any{"destination": dst, "edges": edges}, err)
	}))
	// Exceptions, readiness and the preview (daytwo.go).
	s.dayTwoRoutes(mux)
	return mux
}

// access says what a route does, for authorization and audit.
type access struct {
	attrs    func(*http.Request) auth.Attributes
	mutating bool
}

func read(a auth.Attributes) access {
	return access{attrs: func(*http.Request) auth.Attributes { return a }}
}
func write(a auth.Attributes) access {
	return access{attrs: func(*http.Request) auth.Attributes { return a }, mutating: true}
}

// guard authenticates the caller (401), authorizes what it asks (403), and
// refuses a caller under quarantine every mutating call (403): a
// quarantined workload may neither release its quarantine nor blind the
// detection that holds it (retrain, roll back, add exceptions), whatever
// its RBAC allows. Every mutating call, and every refusal, is an audit
// line naming the caller.
func (s *Server) guard(a access, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := a.attrs(r)
		audit := func(p *auth.Principal, allowed bool, status int, reason string) {
			attrs := []any{"audit", true, "action", at.String(), "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr,
				"allowed", allowed, "status", status}
			if p != nil {
				attrs = append(attrs, "user", p.User, "groups", p.Groups)
				if p.Identity != "" {
					attrs = append(attrs, "identity", p.Identity)
				}
			}
			if reason != "" {
				attrs = append(attrs, "reason", reason)
			}
			s.log.Info("admin API", attrs...)
		}
		p, err := s.auth.Authenticate(r.Context(), r)
		if err != nil {
			status := http.StatusUnauthorized
			if errors.Is(err, auth.ErrUnavailable) {
				status = http.StatusServiceUnavailable
			} else {
				w.Header().Set("WWW-Authenticate", `Bearer realm="meshward"`)
			}
			audit(nil, false, status, err.Error())
			http.Error(w, err.Error(), status)
			return
		}
		if a.mutating && p.Identity != "" {
			if id, held := s.quarantineOf(p.Identity); held {
				why := fmt.Sprintf("%s is under quarantine %s: it may not change what holds it", p.Identity, id)
				audit(p, false, http.StatusForbidden, why)
				http.Error(w, why, http.StatusForbidden)
				return
			}
		}
		allowed, why, err := s.auth.Authorize(r.Context(), p, at)
		if err != nil {
			audit(p, false, http.StatusServiceUnavailable, err.Error())
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if !allowed {
			audit(p, false, http.StatusForbidden, why)
			http.Error(w, "forbidden: "+why, http.StatusForbidden)
			return
		}
		// The handler knows who calls (an exception's author).
		r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		if !a.mutating {
			h(w, r)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h(rec, r)
		audit(p, true, rec.code, "")
	})
}

// principalKey holds the authenticated caller in a guarded request's
// context.
type principalKey struct{}

// principal returns the authenticated caller of a guarded request.
func principal(r *http.Request) *auth.Principal {
	p, _ := r.Context().Value(principalKey{}).(*auth.Principal)
	return p
}

// quarantineOf returns the standing quarantine (dry run or enforced) of a
// mesh identity, if any: by its SPIFFE ID, or by its namespace and service
// account (a decision on another trust domain's name for the same account).
func (s *Server) quarantineOf(id string) (string, bool) {
	if s.cfg.Quarantine == nil {
		return "", false
	}
	_, ns, sa, ok := identity.ParseSPIFFE(id)
	for _, d := range s.cfg.Quarantine.Standing() {
		if d.Principal == id || ok && d.Namespace == ns && d.ServiceAccount == sa {
			return d.ID, true
		}
	}
	return "", false
}

func (s *Server) json(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}
