package conntrack

import "github.com/prometheus/client_golang/prometheus"

// The Revoker's series (namespace podwall, subsystem conntrack; listed with every other series
// in cmd/podwall/README.md). A Revoker is a prometheus.Collector of them.
var (
	revokedDesc = prometheus.NewDesc("podwall_conntrack_revoked_total",
		"Connections cut (conntrack entries marked revoked) because the policy in force denies them.", nil, nil)
	releasedDesc = prometheus.NewDesc("podwall_conntrack_released_total",
		"Revoked conntrack entries deleted because a later policy allows their connection again.", nil, nil)
	sweepsDesc = prometheus.NewDesc("podwall_conntrack_sweeps_total",
		"Sweeps of the conntrack table after a policy change.", nil, nil)
	scannedDesc = prometheus.NewDesc("podwall_conntrack_scanned_total",
		"Conntrack entries read by sweeps.", nil, nil)
	sweepErrorsDesc = prometheus.NewDesc("podwall_conntrack_sweep_errors_total",
		"Sweeps that failed to read the table or to mark or delete an entry.", nil, nil)
)

func newSweepSeconds() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "podwall", Subsystem: "conntrack",
		Name: "sweep_seconds", Help: "Time to read the conntrack table and mark the entries the new policy denies.",
		Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16)})
}

// Describe implements prometheus.Collector.
func (r *Revoker) Describe(ch chan<- *prometheus.Desc) {
	ch <- revokedDesc
	ch <- releasedDesc
	ch <- sweepsDesc
	ch <- scannedDesc
	ch <- sweepErrorsDesc
	r.sweepSeconds.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Revoker) Collect(ch chan<- prometheus.Metric) {
	s := r.Stats()
	ch <- prometheus.MustNewConstMetric(revokedDesc, prometheus.CounterValue, float64(s.Revoked))
	ch <- prometheus.MustNewConstMetric(releasedDesc, prometheus.CounterValue, float64(s.Released))
	ch <- prometheus.MustNewConstMetric(sweepsDesc, prometheus.CounterValue, float64(s.Sweeps))
	ch <- prometheus.MustNewConstMetric(scannedDesc, prometheus.CounterValue, float64(s.Scanned))
	ch <- prometheus.MustNewConstMetric(sweepErrorsDesc, prometheus.CounterValue, float64(s.Errors))
	r.sweepSeconds.Collect(ch)
}
