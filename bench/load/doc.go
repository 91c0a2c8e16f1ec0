// Package load is podwall's netns load harness: it builds a one-node lab with
// cmd/podwall/lab (a client and a server pod whose traffic crosses the node's forward hook),
// installs one filter at a time on the node — nothing, a kernel-only nftables rule set of
// podwall's shape, or the real podwall agent (lab.Agent) — and measures new TCP connections
// per second, connect latency, packets judged per connection, queue drops, verdict latency
// and the agent's CPU (Load, Measure), the latency of one connection made alone or a few at
// a time, paired by round with kernel-only's (Config.Latency, MeasureLatency), the
// throughput of one established connection (Sink.Stream), and the agent's memory on
// generated clusters (MeasureRSS). RawQueue and GoNFQueue are experiments that serve
// podwall's queues with a minimal reader and with go-nfqueue alone, to split the cost of a
// queued connection; they stay here, out of the lab. Config.Alt runs a second podwall build
// in the same rounds, to compare two builds.
//
// Everything needs root and runs inside the lab's namespaces; every load is bounded by a
// count and a deadline. cmd/podwall-bench is the command line; bench/README.md has the
// method and the latest figures.
package load
