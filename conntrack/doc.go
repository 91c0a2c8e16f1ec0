// Package conntrack revokes connections that a new policy denies. podwall judges only the
// first packet of a connection; conntrack then carries the rest in the kernel
// ("ct state established,related accept"). When policy tightens, a connection admitted
// under the old policy would live on. The Revoker deletes the conntrack entries of such
// connections, so their next packet is not established: it is queued, judged by the
// policy in force and dropped.
//
// # What a sweep does
//
// A sweep is run for one policy generation (Policy), after the agent has swapped in the
// snapshot and synced the kernel sets:
//
//  1. Scope. Only connections from a local pod isolated for egress or to a local pod
//     isolated for ingress can be denied (a non-isolated direction allows everything).
//     If there are none, the table is not read at all.
//  2. Read. One dump of the namespace's conntrack table over ctnetlink, both families,
//     streamed: entries are judged as they arrive and only denied ones are kept, so
//     memory does not grow with the table (a busy node holds hundreds of thousands).
//  3. Judge. Each entry in scope is judged as the datapath judged its first packet: the
//     hook runs after DNAT and before SNAT, so the flow is the original source, the
//     reply's source address and port (the real destination, e.g. the pod behind a
//     Service) and the protocol; ports only for TCP, UDP and SCTP, as in the datapath.
//     Connections of the node itself (either end an address of the namespace) never pass
//     the forward hook and are left alone, and so are TCP connections that have ended
//     (TIME_WAIT, CLOSE): they carry nothing, and a new SYN on their tuple is judged anew.
//  4. Delete exactly the denied entries, in batches, each by its original tuple, zone and
//     kernel id: an entry that meanwhile died, or was replaced by a new connection with
//     the same tuple, is not touched (it counts as gone). Never a flush.
//
// The sweeps run on a thread of their own at nice 10: a dump makes the kernel walk the
// whole conntrack hash table, shared by all namespaces (262,144 buckets on the test
// machine: about 6 ms even when the table is empty), and that work yields to the
// datapath and to applying the next policy. Requests never block the caller and coalesce: while a sweep runs, further requests are
// folded into one more sweep for the latest policy. The agent requests a sweep after every
// applied policy and once at start, for the first policy against whatever conntrack holds
// (connections admitted before the agent ran, or by the queue bypass of a fail-open agent
// that was down). --keep-established turns revocation off.
//
// # How it talks to the kernel
//
// Table speaks ctnetlink through github.com/mdlayher/netlink: its Conn frames, numbers and
// sends the requests and reads the answers, a dump as it arrives (ReceiveIter), so one
// message loop (exchange) serves dump, delete and get. The unit tests run Table against a
// fake ctnetlink behind the library's nltest; the kernel tests against a throwaway network
// namespace. What is podwall's own is what it asks: a delete carries the original tuple as
// the dump delivered it, the zone and the kernel id, and a delete without a tuple (which
// would flush the table) is never sent. On the hot path of a sweep, the attributes of each
// dumped entry are walked in place (parseEntry): the library's AttributeDecoder copies
// every attribute, which costs the sweep measurably (bench/README.md, "conntrack
// revocation sweep"). github.com/ti-mo/conntrack was weighed and not taken: its Dump
// returns the whole table as one slice, and it deletes one entry per round trip.
//
// # What revocation guarantees, and what not
//
//   - A connection the policy in force denies loses its conntrack entry within one sweep
//     of the change (a few milliseconds after the sets are synced on a small table; the
//     dump is linear in the table size). Its next packet in the original direction is
//     then judged and dropped, and so is every retransmission.
//   - The cut happens at the next packet: an idle connection notices when it next sends.
//   - If the first packet after the deletion comes from the other end (the server speaks
//     first), the kernel picks the connection up as a new one in the reverse direction
//     (nf_conntrack_tcp_loose, on by default; UDP has no direction), and that reverse flow
//     is judged as such: from a pod that is only ingress-isolated it is allowed, and the
//     original direction then rides on it as a reply. Revocation is therefore reliable for
//     client-speaks-next traffic (requests, keepalives of the client) and best effort for
//     server-push. Closing this needs the datapath to judge mid-stream pickups (a new TCP
//     packet without SYN) in their original direction.
//   - A packet judged under the old policy an instant before the swap can create its entry
//     after the sweep read the table; the next policy change, or the next restart, sweeps
//     it. The window is the time between a verdict and the kernel confirming the entry
//     (microseconds), against a sweep that starts after the sets are synced.
//
// # Uninstall
//
// Table.DeleteMarked deletes the entries carrying a connection mark under a mask, for
// `podwall cleanup --conntrack`; it refuses a zero mark or mask (every unmarked connection).
// This version of the agent marks no connection, so cleanup has nothing to clear unless told
// a mark.
//
// # Metrics
//
// A Revoker is a prometheus.Collector of its counters and sweep durations (subsystem
// conntrack); cmd/podwall/README.md lists them with every other series.
package conntrack
