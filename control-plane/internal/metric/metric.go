// Package metric defines the control plane's metrics as values (name,
// help, label names) from which their collectors are built, so the list
// that dashboards and alert rules are checked against (server.Metrics) is
// what /metrics serves, by construction.
package metric

import "github.com/prometheus/client_golang/prometheus"

// Def is one metric: what it is registered with.
type Def struct {
	Name   string
	Help   string
	Labels []string
}

// CounterVec is a counter with the metric's labels.
func (d Def) CounterVec() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: d.Name, Help: d.Help}, d.Labels)
}

// Counter is a counter without labels (a Def with labels panics: it is a
// programming error, found by the first test that builds it).
func (d Def) Counter() prometheus.Counter {
	if len(d.Labels) > 0 {
		panic("metric " + d.Name + " has labels: use CounterVec")
	}
	return prometheus.NewCounter(prometheus.CounterOpts{Name: d.Name, Help: d.Help})
}

// Desc describes the metric to a collector that reads its value when
// Prometheus scrapes.
func (d Def) Desc() *prometheus.Desc { return prometheus.NewDesc(d.Name, d.Help, d.Labels, nil) }
