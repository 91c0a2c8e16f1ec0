// Package scrape reads Prometheus metrics into samples to look up by name and labels: the
// text a /metrics endpoint serves (Parse, with prometheus/common's expfmt) or what a
// registry gathers (Gather). `podwall demo`, the network-namespace lab (lab.Agent.Metrics),
// the e2e tests and the bench harness read the agent's /metrics with it; a unit test can
// read a prometheus.Registry the same way.
//
// Samples are flat, as the text format writes them: a histogram is its name_bucket samples
// (label le, the +Inf bucket included), name_sum and name_count; a summary its quantile
// samples (label quantile), name_sum and name_count.
package scrape
