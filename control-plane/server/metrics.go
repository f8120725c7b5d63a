package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/control-plane/collector"
	"github.com/meshward/meshward/control-plane/internal/metric"
)

// Metric names of the control plane's state, read when Prometheus scrapes
// (the store and the xDS server are the truth; nothing is cached here).
const (
	MetricRedisUp         = "meshward_redis_up"
	MetricModelInfo       = "meshward_model_info"
	MetricModelsStored    = "meshward_models_stored"
	MetricIncidents       = "meshward_incidents_total"
	MetricXDSNACKs        = "meshward_xds_nacks"
	MetricCanaryActive    = "meshward_rollout_canary_active"
	MetricRollbacks       = "meshward_rollbacks_total"
	MetricCollectorBatch  = "meshward_collector_batches_total"
	MetricCollectorRecord = "meshward_collector_records_total"
	MetricTrainerRounds   = "meshward_trainer_rounds_total"
	MetricTrainerCapped   = "meshward_trainer_samples_capped_total"
	MetricCanaryDecisions = "meshward_canary_decisions_total"
	MetricXDSSyncFailures = "meshward_xds_sync_failures_total"
	// Lateral movement (the leader's; 0 elsewhere).
	MetricQuarantineWriteFailures = "meshward_quarantine_write_failures_total"
	MetricQuarantinePending       = "meshward_quarantine_pending"
	MetricQuarantineHeldDropped   = "meshward_quarantine_held_dropped_total"
	MetricDetectorEvictions       = "meshward_detector_evictions_total"
	MetricXDSNodeGroups           = "meshward_xds_node_groups"
	MetricXDSNodeGroupsEvicted    = "meshward_xds_node_groups_evicted_total"
)

// The control plane's own metrics, defined once: New and the state
// collector build theirs from these, and Metrics lists them.
var (
	defCollectorBatch  = metric.Def{Name: MetricCollectorBatch, Labels: []string{"code"}, Help: "Batches received by the collector, by HTTP status."}
	defTrainerRounds   = metric.Def{Name: MetricTrainerRounds, Labels: []string{"outcome"}, Help: "Training rounds, by outcome (published, rejected, failed)."}
	defTrainerCapped   = metric.Def{Name: MetricTrainerCapped, Help: "Training samples read but left out by the bound on what one source contributes to a destination (-samples-per-source) or on what one destination contributes (-samples-per-destination)."}
	defCanaryDecisions = metric.Def{Name: MetricCanaryDecisions, Labels: []string{"outcome"}, Help: "Canary decisions, by outcome (promoted, rolled_back)."}
	defXDSSyncFailures = metric.Def{Name: MetricXDSSyncFailures, Help: "Times xDS could not read the rollout state from the store and kept serving its last snapshot."}
	defRollbacks       = metric.Def{Name: MetricRollbacks, Help: "Model rollbacks done by this replica (POST /api/v1/rollback)."}

	// Read when Prometheus scrapes (state).
	defRedisUp       = metric.Def{Name: MetricRedisUp, Help: "1 when the store (Redis) answers a PING within 2 s, else 0."}
	defModelInfo     = metric.Def{Name: MetricModelInfo, Labels: []string{"sha256"}, Help: "The model in force (value 1), by sha256; what the filters are given."}
	defModelsStored  = metric.Def{Name: MetricModelsStored, Help: "Model versions kept in the store's history."}
	defIncidents     = metric.Def{Name: MetricIncidents, Help: "Lateral-movement incidents recorded in the store since it was created (shared by every replica: aggregate with max, not sum)."}
	defXDSNACKs      = metric.Def{Name: MetricXDSNACKs, Help: "Configurations Envoys refused over xDS, among the last 100 recorded by this replica."}
	defCanaryActive  = metric.Def{Name: MetricCanaryActive, Labels: []string{"sha256"}, Help: "1 while a canary model is out to a share of the nodes, by its sha256."}
	defWriteFailures = metric.Def{Name: MetricQuarantineWriteFailures, Help: "Quarantine writes that failed (refused by the API server, unreachable, fenced) on this replica; each is retried with backoff."}
	defPending       = metric.Def{Name: MetricQuarantinePending, Labels: []string{"why"}, Help: "Quarantine decisions not in force yet on the leader, by why: write (its write failed, retried), limit (a rate limit or cap holds it until it frees)."}
	defHeldDropped   = metric.Def{Name: MetricQuarantineHeldDropped, Help: "Decisions waiting for a limit that the bound on waiting decisions (-max-pending-decisions) dropped."}
	defEvictions     = metric.Def{Name: MetricDetectorEvictions, Help: "Principals the lateral-movement detector forgot because it follows at most -detect-max-sources."}
	defGroups        = metric.Def{Name: MetricXDSNodeGroups, Help: "Node groups this replica's xDS server keeps (each with its snapshots)."}
	defGroupsEvicted = metric.Def{Name: MetricXDSNodeGroupsEvicted, Help: "Node groups forgotten: idle past -xds-group-ttl, or making room under -xds-max-groups."}
)

// Metrics lists every metric of meshward's own that meshward serve exports
// on /metrics, the collector's included, with its help and label names:
// the dashboards and alert rules are checked against it. /metrics also
// serves client_golang's standard Go runtime and process metrics.
func Metrics() []metric.Def {
	own := []metric.Def{defCollectorBatch, defTrainerRounds, defTrainerCapped, defCanaryDecisions, defXDSSyncFailures, defRollbacks,
		defRedisUp, defModelInfo, defModelsStored, defIncidents, defXDSNACKs, defCanaryActive,
		defWriteFailures, defPending, defHeldDropped, defEvictions, defGroups, defGroupsEvicted}
	own = append(own, dayTwoMetrics()...)
	return append(own, collector.Metrics()...)
}

// MetricLabels maps the name of each of Metrics to its label names.
func MetricLabels() map[string][]string {
	out := map[string][]string{}
	for _, m := range Metrics() {
		out[m.Name] = m.Labels
	}
	return out
}

// state is a collector that reads the control plane's state at scrape time.
type state struct {
	s                                                  *Server
	redisUp, modelInfo, models, incidents, nacks, cary *prometheus.Desc
	writeFails, pending, heldDropped, evictions        *prometheus.Desc
	groups, groupsEvicted                              *prometheus.Desc
}

func newState(s *Server) *state {
	return &state{s: s,
		redisUp: defRedisUp.Desc(), modelInfo: defModelInfo.Desc(), models: defModelsStored.Desc(), incidents: defIncidents.Desc(),
		nacks: defXDSNACKs.Desc(), cary: defCanaryActive.Desc(), writeFails: defWriteFailures.Desc(), pending: defPending.Desc(),
		heldDropped: defHeldDropped.Desc(), groups: defGroups.Desc(), groupsEvicted: defGroupsEvicted.Desc(), evictions: defEvictions.Desc(),
	}
}

func (c *state) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.redisUp, c.modelInfo, c.models, c.incidents, c.nacks, c.cary, c.writeFails, c.pending, c.heldDropped, c.evictions, c.groups, c.groupsEvicted} {
		ch <- d
	}
}

func (c *state) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if s.rdb == nil || s.store == nil {
		return // not started
	}
	if s.cfg.Quarantine != nil {
		var fails, dropped, evicted int64
		var writes, held int
		if loop := s.loop.Load(); loop != nil {
			fails, evicted = loop.Failures(), loop.Evicted()
			held, dropped = loop.Held()
			writes = len(loop.Pending())
		}
		ch <- prometheus.MustNewConstMetric(c.writeFails, prometheus.CounterValue, float64(fails))
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(writes), "write")
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(held), "limit")
		ch <- prometheus.MustNewConstMetric(c.heldDropped, prometheus.CounterValue, float64(dropped))
		ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(evicted))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	up := 0.0
	if s.rdb.Ping(ctx).Err() == nil {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.redisUp, prometheus.GaugeValue, up)
	if up == 1 {
		if sha, err := s.store.Current(ctx); err == nil && sha != "" {
			ch <- prometheus.MustNewConstMetric(c.modelInfo, prometheus.GaugeValue, 1, sha)
		}
		if shas, err := s.store.Models(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(c.models, prometheus.GaugeValue, float64(len(shas)))
		}
		if n, err := s.store.IncidentsTotal(ctx); err == nil {
			ch <- prometheus.MustNewConstMetric(c.incidents, prometheus.CounterValue, float64(n))
		}
	}
	if s.xds != nil {
		kept, evicted := s.xds.Groups()
		ch <- prometheus.MustNewConstMetric(c.groups, prometheus.GaugeValue, float64(kept))
		ch <- prometheus.MustNewConstMetric(c.groupsEvicted, prometheus.CounterValue, float64(evicted))
		ch <- prometheus.MustNewConstMetric(c.nacks, prometheus.GaugeValue, float64(len(s.xds.NACKs())))
		if v := s.xds.CanaryVersion(); v != "" {
			ch <- prometheus.MustNewConstMetric(c.cary, prometheus.GaugeValue, 1, v)
		}
	}
}
