package server

import (
	"context"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// state is a collector that reads the control plane's state at scrape time.
type state struct {
	s                                                  *Server
	redisUp, modelInfo, models, incidents, nacks, cary *prometheus.Desc
	writeFails, pending, heldDropped, evictions        *prometheus.Desc
	groups, groupsEvicted                              *prometheus.Desc
}

func newState(s *Server) *state {
	return &state{s: s,
		redisUp:       prometheus.NewDesc(MetricRedisUp, "1 when the store (Redis) answers a PING within 2 s, else 0.", nil, nil),
		modelInfo:     prometheus.NewDesc(MetricModelInfo, "The model in force (value 1), by sha256; what the filters are given.", []string{"sha256"}, nil),
		models:        prometheus.NewDesc(MetricModelsStored, "Model versions kept in the store's history.", nil, nil),
		incidents:     prometheus.NewDesc(MetricIncidents, "Lateral-movement incidents recorded in the store since it was created (shared by every replica: aggregate with max, not sum).", nil, nil),
		nacks:         prometheus.NewDesc(MetricXDSNACKs, "Configurations Envoys refused over xDS, among the last 100 recorded by this replica.", nil, nil),
		cary:          prometheus.NewDesc(MetricCanaryActive, "1 while a canary model is out to a share of the nodes, by its sha256.", []string{"sha256"}, nil),
		writeFails:    prometheus.NewDesc(MetricQuarantineWriteFailures, "Quarantine writes that failed (refused by the API server, unreachable, fenced) on this replica; each is retried with backoff.", nil, nil),
		pending:       prometheus.NewDesc(MetricQuarantinePending, "Quarantine decisions not in force yet on the leader, by why: write (its write failed, retried), limit (a rate limit or cap holds it until it frees).", []string{"why"}, nil),
		heldDropped:   prometheus.NewDesc(MetricQuarantineHeldDropped, "Decisions waiting for a limit that the bound on waiting decisions (-max-pending-decisions) dropped.", nil, nil),
		groups:        prometheus.NewDesc(MetricXDSNodeGroups, "Node groups this replica's xDS server keeps (each with its snapshots).", nil, nil),
		groupsEvicted: prometheus.NewDesc(MetricXDSNodeGroupsEvicted, "Node groups forgotten: idle past -xds-group-ttl, or making room under -xds-max-groups.", nil, nil),
		evictions:     prometheus.NewDesc(MetricDetectorEvictions, "Principals the lateral-movement detector forgot because it follows at most -detect-max-sources.", nil, nil),
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

var (
	fqName    = regexp.MustCompile(`fqName: "([^"]+)"`)
	varLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// MetricLabels maps the name of every metric the control plane exports on
// /metrics (the Go runtime's and the process's included) to its label
// names, read from the registered collectors' descriptions, so dashboards
// and alert rules can be checked against what really exists.
func (s *Server) MetricLabels() map[string][]string {
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range s.collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	out := map[string][]string{}
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			continue
		}
		var labels []string
		if l := varLabels.FindStringSubmatch(d.String()); l != nil && l[1] != "" {
			labels = strings.Split(l[1], ",")
		}
		out[m[1]] = labels
	}
	return out
}

// MetricNames lists the names MetricLabels knows, sorted.
func (s *Server) MetricNames() []string {
	labels := s.MetricLabels()
	out := make([]string, 0, len(labels))
	for n := range labels {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
