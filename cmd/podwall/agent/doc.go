// Package agent is `podwall run`: one running podwall on one node. It owns the start-up order
// (first policy, then queue readers, then the kernel table, then revocation of what the
// first policy denies), applying each new policy state (compile, sync the kernel sets, swap
// the snapshot in force, sweep conntrack), what happens to each verdict (metrics, the
// decision stream, and for a deny the kernel's deny cache), and the HTTP listeners (/metrics, /healthz, /readyz and the debug pages).
//
// It is wiring of the subsystems, each of which owns its own work and metrics: policy
// (compile and decide), datapath (queues and their readers), datapath/nft (the table),
// conntrack (revocation), policy/decisions (the stream), policy/flows (the flow history and
// log), policy/kube and policy/manifests
// (the sources). The command in cmd/podwall turns flags into a Config; New builds an Agent
// without touching the kernel; Run does the rest until its context ends.
//
// Every series the agent exports, its own and its subsystems', is listed in
// cmd/podwall/README.md; a test keeps that list complete.
package agent
