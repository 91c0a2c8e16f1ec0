package kube

import "github.com/prometheus/client_golang/prometheus"

// The Source's series (namespace podwall, subsystem source; listed with every other series in
// cmd/podwall/README.md), read from Status at scrape time.
var (
	connectedDesc = prometheus.NewDesc("podwall_source_connected",
		"1 while the last request to the Kubernetes API got an answer; 0 while it is unreachable (the last state stays enforced).", nil, nil)
	apiErrorsDesc = prometheus.NewDesc("podwall_source_api_errors_total",
		"Requests to the Kubernetes API that failed: no answer, a broken watch, 401/403 or 5xx. client-go retries them.", nil, nil)
	clusterPolicyCRDDesc = prometheus.NewDesc("podwall_source_cluster_policy_crd",
		"1 while the ClusterNetworkPolicy CRD is installed and its objects are listed and watched; 0 while it is not installed (rechecked periodically) or not listed yet.", nil, nil)
	clusterPoliciesDesc = prometheus.NewDesc("podwall_source_cluster_policies",
		"ClusterNetworkPolicies in the source's cache (0 while the CRD is not installed).", nil, nil)
)

// Describe implements prometheus.Collector.
func (s *Source) Describe(ch chan<- *prometheus.Desc) {
	ch <- connectedDesc
	ch <- apiErrorsDesc
	ch <- clusterPolicyCRDDesc
	ch <- clusterPoliciesDesc
}

// Collect implements prometheus.Collector.
func (s *Source) Collect(ch chan<- prometheus.Metric) {
	st := s.Status()
	connected := 0.0
	if st.Connected {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(connectedDesc, prometheus.GaugeValue, connected)
	ch <- prometheus.MustNewConstMetric(apiErrorsDesc, prometheus.CounterValue, float64(st.Errors))
	crd := 0.0
	if st.ClusterPolicyAPI == CRDWatched {
		crd = 1
	}
	ch <- prometheus.MustNewConstMetric(clusterPolicyCRDDesc, prometheus.GaugeValue, crd)
	ch <- prometheus.MustNewConstMetric(clusterPoliciesDesc, prometheus.GaugeValue, float64(st.ClusterPolicies))
}
