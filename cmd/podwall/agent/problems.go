package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/policy"
)

// Objects rejected alone (policy.Problem), addresses several pods claim (policy.Conflict)
// and ClusterNetworkPolicy rules enforced otherwise than written (Snapshot.ClusterProblems)
// are reported three ways (the last only by the log and the reasons): a log line when one appears or goes (once per
// change, not per resync), a series while it lasts, and the reason of every decision it
// takes part in (the policy package writes those).

// reportProblems logs the problems and conflicts of s that the snapshot before it did not
// have, and those it no longer has. Called under the apply lock.
func (a *Agent) reportProblems(s *policy.Snapshot) {
	now := map[string]bool{}
	for _, p := range s.Problems() {
		msg := p.String()
		now[msg] = true
		if !a.reported[msg] {
			a.log.Warn("object rejected alone; the rest of the policy applies", "kind", p.Kind, "namespace", p.Namespace,
				"name", p.Name, "where", p.Where, "problem", p.Fields(), "effect", p.Effect())
		}
	}
	for _, c := range s.Conflicts() {
		msg := "conflict " + c.String()
		now[msg] = true
		if !a.reported[msg] {
			a.log.Warn("address claimed by several live pods; judged with every claimant (deny unless all allow)",
				"address", c.Addr, "pods", c.Pods)
		}
	}
	for _, p := range s.ClusterProblems() { // fail-closed rules, invalid policies, priority ties
		msg := "cnp " + p
		now[msg] = true
		if !a.reported[msg] {
			a.log.Warn("ClusterNetworkPolicy enforced otherwise than written", "problem", p)
		}
	}
	for msg := range a.reported {
		if !now[msg] {
			a.log.Info("resolved", "was", msg)
		}
	}
	a.reported = now
}

// problemCollector exports the problems and conflicts of the snapshot in force.
type problemCollector struct{ in *inForce }

var (
	invalidDesc = prometheus.NewDesc("podwall_policy_invalid",
		"1 for each object rejected alone in the snapshot in force: a NetworkPolicy enforced fail-closed, a Pod holding no address, a Namespace matching no namespaceSelector, a Node with an unusable address, a ClusterNetworkPolicy enforced fail-closed.",
		[]string{"kind", "namespace", "name"}, nil)
	conflictsDesc = prometheus.NewDesc("podwall_policy_address_conflicts",
		"Addresses that several live pods claim in the snapshot in force, each judged with every claimant.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c problemCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- invalidDesc
	ch <- conflictsDesc
}

// Collect implements prometheus.Collector.
func (c problemCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.in.Load()
	seen := map[[3]string]bool{} // a source may report one object twice (two files)
	for _, p := range s.Problems() {
		k := [3]string{p.Kind, p.Namespace, p.Name}
		if seen[k] {
			continue
		}
		seen[k] = true
		ch <- prometheus.MustNewConstMetric(invalidDesc, prometheus.GaugeValue, 1, p.Kind, p.Namespace, p.Name)
	}
	ch <- prometheus.MustNewConstMetric(conflictsDesc, prometheus.GaugeValue, float64(len(s.Conflicts())))
}
