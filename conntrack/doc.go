// Package conntrack revokes connections that a new policy denies. podwall judges only the
// first packet of a connection; conntrack then carries the rest in the kernel
// ("ct state established,related accept"). When policy tightens, a connection admitted
// under the old policy would live on. The Revoker marks the conntrack entries of such
// connections revoked — a bit of the connection mark, Config.Mark (`--revoke-mark`,
// DefaultMark) — and the datapath drops every packet of a marked connection, in both
// directions, before its established accept (datapath/nft: "ct mark & M == M drop").
//
// # Why a mark, not a deletion
//
// Deleting the entry cuts only the side that speaks next in the original direction. When
// the other side speaks first — the server pushes, the remote end of a reverse shell
// sends, or simply answers the client's retransmission — conntrack has no entry and picks
// the packet up as a new connection in the other direction (TCP: nf_conntrack_tcp_loose,
// on by default; UDP has no direction at all). That new connection is judged as what it
// looks like: a packet from a pod that is only ingress-isolated to a pod that is not
// isolated is allowed, and the original direction then rides on it as a reply, revived
// and out of reach of later sweeps (they judge entries in their recorded direction).
// A marked entry instead stays in the table: every packet of the connection, whichever
// side sends it, still finds it, so none is ever picked up as new, and the rule drops
// them all — TCP, UDP and every other protocol alike, ICMP errors about the connection too
// (they are related to it and carry its mark).
//
// The other ways weighed: refusing mid-stream TCP pickups (ct state new without SYN) for
// isolated pods closes TCP only — a UDP packet of the server after a deletion is an
// ordinary new flow — and would also cut allowed connections whose entry was lost for any
// other reason; a kernel set of revoked tuples with a timeout needs both directions of
// every tuple and forgets them on its own clock, while the mark lives exactly as long as
// the connection's entry. The costs of the mark: one ct load, and, per revoked connection,
// an entry that stays until conntrack times it out (below).
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
//     the forward hook and are left alone — except those between a local pod and its own
//     node that the policy can cut (a NodePolicy: the agent's, from a ClusterNetworkPolicy),
//     which the node's input and output chains judge and drop when marked — and so are
//     TCP connections that have ended
//     (TIME_WAIT, CLOSE): they carry nothing, and a new SYN on their tuple is judged anew.
//  4. Mark exactly the denied entries, in batches, each found by its original tuple and
//     zone (an update, IPCTNL_MSG_CT_NEW without NLM_F_CREATE, with CTA_MARK and
//     CTA_MARK_MASK: the mark's other bits are kept). An entry that meanwhile died counts
//     as gone; one replaced by a new connection on the same tuple is marked (the kernel
//     ignores the id on an update) — the same flow, which the policy denies just as well.
//  5. Entries found already marked are judged whatever the scope (their pods may have lost
//     their isolation since): while the policy denies them they stay marked; once it
//     allows them they are deleted ("released", by tuple, zone and id), so that their
//     next packet is judged anew. Never a flush. A sweep reads the table even with nothing
//     isolated until one has found no marked entry left (an earlier run may have left
//     some).
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
// Table speaks ctnetlink through github.com/mdlayher/netlink: its Conn frames, numbers
// and sends the requests and reads the answers, a dump as it arrives (ReceiveIter), so
// one message loop (exchange) serves dump, mark, delete and get. The unit tests run Table
// against a fake ctnetlink behind the library's nltest; the kernel tests against a
// throwaway network namespace. What is podwall's own is what it asks: a mark or a delete
// carries the original tuple as the dump delivered it and the zone (a delete also the
// kernel id), and a request without a tuple (a delete without one would flush the table)
// is never sent. On the hot path of a sweep, the attributes of each dumped entry are
// walked in place (parseEntry): the library's AttributeDecoder copies every attribute,
// which costs the sweep measurably (bench/README.md, "conntrack revocation sweep").
// github.com/ti-mo/conntrack was weighed and not taken: its Dump returns the whole table
// as one slice, and it deletes one entry per round trip.
//
// # What revocation guarantees, and what not
//
//   - A connection the policy in force denies is marked within one sweep of the change (a
//     few milliseconds after the sets are synced on a small table; the dump is linear in
//     the table size). From then on no packet of it passes the node's forward hook, in
//     either direction, whoever sends next: the client, the server, a peer outside the
//     cluster (e2e TestRevokedStaysCut).
//   - The cut happens at the next packet: an idle connection notices when it next sends.
//     Its endpoints are not told (no RST): their retransmissions are dropped until they
//     give up.
//   - A marked entry lives as long as conntrack keeps it: every packet still refreshes it
//     (conntrack sees packets before the forward hook drops them), so a connection whose
//     ends keep sending stays cut for as long as they do. Once both ends fall silent for
//     the entry's timeout (UDP 30 s, or 120 s once it had seen replies; TCP 300 s with
//     unacknowledged data, 5 days when idle established — the nf_conntrack_*_timeout
//     sysctls), the entry goes, and a later packet is a new connection judged as what it
//     is. For UDP that is a new flow by definition; for TCP it is a mid-stream pickup
//     judged in its own direction, the gap deletion had — now only after that much
//     silence. A TCP connection that is closed (a FIN or RST passed, TIME_WAIT/CLOSE) is
//     not marked: a new SYN on its tuple replaces the entry and is judged.
//   - The mark bit is the Revoker's: anything else on the node that sets the same bit of
//     the connection mark gets its connections dropped. --revoke-mark picks another bit.
//   - A packet judged under the old policy an instant before the swap can create its entry
//     after the sweep read the table; the next policy change, or the next restart, sweeps
//     it. The window is the time between a verdict and the kernel confirming the entry
//     (microseconds), against a sweep that starts after the sets are synced.
//
// # Uninstall
//
// Table.DeleteMarked deletes the entries carrying a connection mark under a mask, for
// `podwall cleanup --conntrack`; it refuses a zero mark or mask (every unmarked connection).
// By default cleanup clears DefaultMark: the connections the Revoker revoked, whose packets
// nothing drops once the agent's table is gone.
//
// # Metrics
//
// A Revoker is a prometheus.Collector of its counters and sweep durations (subsystem
// conntrack); cmd/podwall/README.md lists them with every other series.
package conntrack
