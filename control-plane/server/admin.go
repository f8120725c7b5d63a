package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/store"
	"github.com/meshward/meshward/control-plane/trainer"
)

// statusRecorder remembers the status a handler wrote, and its body (the
// collector's answers are small: they list at most 20 errors).
type statusRecorder struct {
	http.ResponseWriter
	code int
	body bytes.Buffer
}

func (r *statusRecorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// Outcomes of meshward_collector_records_total.
const (
	recordsAccepted = "accepted"
	recordsRejected = "rejected"
)

// countBatches wraps the collector to count batches, and records by the
// outcome its answer gives (accepted: stored; rejected: invalid).
func (s *Server) countBatches(col *collector.Collector) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/records", func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		col.ServeHTTP(rec, r)
		s.batches.WithLabelValues(strconv.Itoa(rec.code)).Inc()
		var resp collector.Response
		if json.Unmarshal(rec.body.Bytes(), &resp) == nil {
			s.records.WithLabelValues(recordsAccepted).Add(float64(resp.Accepted))
			s.records.WithLabelValues(recordsRejected).Add(float64(resp.Rejected))
		}
	})
	return mux
}

// admin serves /healthz, /readyz, /metrics and the JSON API.
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
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	if s.cfg.WasmFile != "" {
		mux.HandleFunc("GET /wasm/meshward.wasm", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/wasm")
			http.ServeFile(w, r, s.cfg.WasmFile)
		})
	}
	mux.HandleFunc("GET /api/v1/models/current", func(w http.ResponseWriter, r *http.Request) {
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
	})
	mux.HandleFunc("/api/v1/models", func(w http.ResponseWriter, r *http.Request) {
		shas, err := s.store.Models(r.Context())
		cur, cerr := s.store.Current(r.Context())
		s.json(w, map[string]any{"models": shas, "current": cur}, errors.Join(err, cerr))
	})
	mux.HandleFunc("POST /api/v1/train", func(w http.ResponseWriter, r *http.Request) {
		rep, err := s.train(r.Context())
		s.json(w, rep, err)
	})
	mux.HandleFunc("/api/v1/leader", func(w http.ResponseWriter, r *http.Request) {
		s.json(w, map[string]any{"leading": s.elector.Leading(), "election": s.election}, nil)
	})
	mux.HandleFunc("POST /api/v1/rollback", func(w http.ResponseWriter, r *http.Request) {
		sha, err := trainer.Rollback(r.Context(), s.store)
		if err == nil {
			s.rollbacks.Inc()
			err = s.sync(r.Context())
		}
		s.json(w, map[string]any{"current": sha}, err)
	})
	mux.HandleFunc("/api/v1/rollouts", func(w http.ResponseWriter, r *http.Request) {
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
	})
	mux.HandleFunc("GET /api/v1/quarantines", func(w http.ResponseWriter, r *http.Request) {
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
	})
	mux.HandleFunc("POST /api/v1/quarantines/{id}/release", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if s.cfg.Quarantine == nil || !s.cfg.Quarantine.Holds(id) {
			http.Error(w, "no such quarantine: "+id, http.StatusNotFound)
			return
		}
		err := s.cfg.Quarantine.Release(r.Context(), id)
		s.json(w, map[string]any{"released": id}, err)
	})
	mux.HandleFunc("/api/v1/incidents", func(w http.ResponseWriter, r *http.Request) {
		incs, err := s.store.Incidents(r.Context(), 100)
		s.json(w, map[string]any{"incidents": incs}, err)
	})
	mux.HandleFunc("/api/v1/edges", func(w http.ResponseWriter, r *http.Request) {
		dst := r.URL.Query().Get("destination")
		if dst == "" {
			http.Error(w, "destination= is required", http.StatusBadRequest)
			return
		}
		edges, err := s.store.Edges(r.Context(), dst, time.Now())
		s.json(w, map[string]any{"destination": dst, "edges": edges}, err)
	})
	return mux
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
