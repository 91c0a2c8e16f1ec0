// Package datapath owns podwall's per-packet path: the NFQUEUE readers that receive the first
// packet of each new connection touching an isolated local pod, decode its headers, look the
// flow up in the verdict cache, ask the Decider on a miss, and give exactly one verdict per
// packet. The kernel side — which packets are queued at all — is package nft; decoding is
// package packet; the cache is package flowcache.
//
// The datapath does not know NetworkPolicy: it needs a Decider, which the agent implements
// over the current policy snapshot. It never blocks on anything but the kernel: observers
// receive records through a callback that must not block.
//
// Failure policy. One setting, Config.FailOpen, decides every failure the same way:
//   - fail closed (default): packets of isolated pods that cannot be judged are dropped — a
//     malformed or truncated header, a queue overflow (the kernel drops when the queue is
//     full), and, with no reader after the agent stops, every queued packet (the rules carry
//     no bypass, see nft.Config.FailOpen);
//   - fail open: the same packets are accepted — malformed packets get accept, a full queue
//     accepts (NFQA_CFG_F_FAIL_OPEN), and with no reader the kernel bypasses the queue.
//
// Established traffic never reaches this package in either mode: conntrack accepts it in the
// kernel before the queue rules. Nor do the repeats of a flow denied a moment ago (a retried
// SYN, a repeated datagram) while the kernel's deny cache holds it (package nft, "The deny
// cache"; the agent fills it from the verdicts it observes).
package datapath
