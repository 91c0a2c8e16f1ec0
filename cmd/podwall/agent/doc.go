// Package agent is `podwall run`: one running podwall on one node. It owns the start-up order
// (first policy, then queue readers, then the kernel table, then revocation of what the
// first policy denies), applying each new policy state (compile, sync the kernel sets, swap
// the snapshot in force, sweep conntrack), what happens to each verdict (metrics, the
// decision stream, for a deny the kernel's deny cache and, when on, for an allow seen again
// its allow cache: kernelcache.go), the new-pod window's inputs (the
// local pods' addresses and the node's pod ranges for the kernel, the Waiter the queue
// readers ask, window.go), the own-node sets synced with them (the pods a
// ClusterNetworkPolicy can cut off from their node, queued at the node's input and output
// hooks; window.go) and the check that anti-spoofing covers every local pod's
// interface, keeping the kernel table in place while it runs (heal.go: a table someone
// removed is programmed again from the snapshot in force), and the HTTP listeners
// (/metrics, /healthz, /readyz and the debug pages). Staged policies (staged.go): the
// proposal of the staged ones compiled beside the enforced snapshot, decided for each
// queued packet, in the stream, the metrics and /debug/explain, never enforced.
//
// It is wiring of the subsystems, each of which owns its own work and metrics: policy
// (compile and decide), datapath (queues and their readers), datapath/nft (the table),
// conntrack (revocation), policy/decisions (the stream), policy/flows (the flow history and
// log), policy/kube and policy/manifests
// (the sources). The command in cmd/podwall turns flags into a Config; New builds an Agent
// without touching the kernel; Run does the rest until its context ends.
//
// The listeners are bounded so that a client cannot hold or fill them (http.go): header,
// idle and write timeouts, header and body limits, a connection cap each; the debug
// listener answers only requests addressed to an IP or localhost (DNS rebinding) and runs
// profiles for at most 30 s. cmd/podwall/README.md ("Listeners") has the figures.
//
// Every series the agent exports, its own and its subsystems', is listed in
// cmd/podwall/README.md; a test keeps that list complete.
package agent
