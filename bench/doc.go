// Package bench holds podwall's performance measurements: Go benchmarks of the policy engine
// (decide latency, compile cost, incremental update cost) at cluster sizes from 100 pods / 10
// policies to 10,000 pods / 1,000 policies, and the netns load harness. bench/README.md has
// the latest figures and the machine they came from.
package bench
