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
// Reading a queue. github.com/florianl/go-nfqueue opens each queue's netlink socket, binds
// it and configures it (copy the packet, up to Config.CopyRange bytes; queue length; GSO
// and, failing open, fail-open flags), and unbinds it. The per-packet path is podwall's own,
// on that same socket: one reader per queue, on one goroutine, reads one datagram at a time
// (one queued packet, as the kernel sends them) into a buffer it owns, without peeking;
// parses the netlink messages and their attributes in place (wire.go); judges the packet;
// and writes an NFQNL_MSG_VERDICT message into a buffer it owns. It sends the verdicts it
// holds in one sendmsg as soon as the socket has nothing more to read, or when 16 are
// waiting, and then hands their Records to Config.Observe; the verdicts of the first read
// after a wait go out at once, so the packet of a lone new connection never waits for a
// read that finds the socket empty. It waits for the socket in the Go poller, and reads
// and writes with raw system calls (both return at once), so that the reader of an idle
// agent does not wake the runtime's sysmon thread on the way to a verdict (bench/README.md,
// "Connect latency"). Per packet it allocates nothing (TestLoopDoesNotAllocate). This
// replaces the library's receive path, which peeked and read per receive, allocated several
// times per message and marshalled a send per verdict; bench/README.md has the
// measurements. The reader never uses NFQNL_MSG_VERDICT_BATCH: it accepts every queued id up to the one it
// names, and so would accept a packet whose message could not be read.
//
// The readers are not pinned to CPUs (runtime.LockOSThread and sched_setaffinity to the CPUs
// whose packets the queue's fanout gets): measured against the unpinned poller reader on the
// load harness, pinning gained nothing consistent, a locked thread waiting in the kernel
// instead of the poller cost more CPU per packet, and a pinned reader could not move off a
// CPU that pods keep busy (bench/README.md, "Reader design").
//
// Failure policy. One setting, Config.FailOpen, decides every failure of the agent's own the
// same way:
//   - fail closed (default): packets of isolated pods that cannot be judged are dropped — a
//     queue overflow (the kernel drops when the queue is full), an NFQUEUE message the
//     reader cannot read, and, with no reader after the agent stops, every queued packet
//     (the rules carry no bypass, see nft.Config.FailOpen);
//   - fail open: the same packets are accepted — a full queue accepts
//     (NFQA_CFG_F_FAIL_OPEN), and with no reader the kernel bypasses the queue. A full queue
//     under fail open accepts by definition: whoever fills the queue faster than the readers
//     empty it gets the excess through unjudged. The kernel's deny cache keeps the repeats
//     of a denied flow out of the queue (bench/README.md, "Deny cache under a flood", has
//     how much of a flood still reaches it); new flows, each judged once, still can fill it.
//
// Packets are not failures of the agent. A packet whose addresses, protocol or ports cannot
// be read (packet.ErrTruncated, packet.ErrMalformed) is dropped in both modes: fail open is
// about the agent's availability, and the bytes of a packet must not choose its verdict.
// Nothing the kernel forwards is unreadable: the decoder reads headers as the kernel
// forwards them (IPv4 and TCP options skipped by the header length, never validated; the
// IPv6 extension header chain walked as the kernel walks it, however long; see
// packet.Decoder), and the kernel copies whole packets (Config.CopyRange, MaxCopyRange), so
// no header chain ends beyond the copy. What is left is what no receiver takes: a TCP
// header length below 20 bytes or beyond the datagram, a UDP length of 1 to 7, a header
// that overruns its datagram.
//
// A later fragment (IPv4 fragment offset or IPv6 fragment header offset not 0) carries no
// ports: its datagram is judged by its first fragment, and the later ones of a protocol
// with ports get the failure policy (Record.Malformed says so). They do not normally reach
// the queue at all: the ruleset's ct expressions load conntrack, whose defragmentation
// (nf_defrag_ipv4, nf_defrag_ipv6, at prerouting) reassembles fragments before the forward
// hook, so the queue sees whole datagrams; and a later fragment let through alone cannot
// make a datagram at the receiver without its first fragment, which is judged. Later
// fragments of other protocols are judged by addresses and protocol like any packet without
// ports.
//
// Two cases the policy cannot reach, whatever it says: a message with no readable packet id
// gets no verdict (there is no id to give one to; the kernel holds the packet until the
// queue is unbound), and packets still waiting in a queue when it is unbound are dropped by
// the kernel. Packets the kernel could not deliver to a full socket (ENOBUFS, counted in
// Stats.ENOBUFS; the reader keeps reading) are dropped, or accepted failing open. A receive
// error that stops a reader is counted in Stats.ReaderFailures (the agent's /healthz then
// fails); its queue is unbound and served by the kernel's failure policy only.
//
// The new-pod window. A pod's first packet can come before the agent knows the pod: the
// kubelet reports a new pod's address once its sandbox has it, the API server passes it on,
// and the agent applies it tens of milliseconds later; meanwhile the address is in no set,
// so without more the pod's connections would pass unjudged (its egress isolation not
// applied) and connections to it likewise. On a bridge (cni0, cbr0) a pod can also take any
// unused address of the bridge's subnet: the reverse-path check passes, since the whole
// subnet routes back through the bridge, and the address is no pod's. Package nft therefore
// keeps two more sets, the addresses of every local pod the policy in force knows (isolated
// or not) and this node's pod ranges (the Node's spec.podCIDRs, or configured), and queues
// any new packet from or to an address of those ranges that no known local pod has. The
// reader asks the Decider, when it is also a Waiter, whether the policy of the generation
// that decided knows the flow's pod addresses; if not, the packet is held rather than
// judged: its id, flow and deadline go into a table of the reader's own (Config.MaxHeld
// entries, preallocated; nothing else of the packet is kept — the kernel keeps the packet in
// its queue until the verdict). Holding never blocks the reader: it goes on reading, and
// while it holds packets it sets its socket's read deadline to wake at least every 5 ms
// (and at the earliest deadline), looks at the Decider's generation, and judges the held
// packets again when it changed — the verdict then comes from the first policy that knows
// the pod, whatever that policy says. A packet no policy learns the pod of within
// Config.HoldTimeout (2 s by default, the agent's --hold-timeout) gets the failure policy's
// verdict, with ErrHoldExpired as its reason: dropped failing closed, accepted failing open.
// So does a packet that finds its reader's table full, and every held packet when the
// reader stops.
//
// Why hold rather than drop: a dropped SYN is retried after 1 s (TCP's initial RTO), so a
// new pod's first connection would pay a second for the agent's few milliseconds; held, it
// waits exactly as long as the agent needs. Why not judge it at once: the policy does not
// know the pod, so any verdict would be a guess — allowing lets the pod's egress isolation
// be skipped, denying cuts connections the policy allows. Why a bound: an address no pod
// ever gets (a spoofing pod on a bridge, a pod that never starts) must end in a verdict, and
// a held packet occupies a slot of the kernel's queue; 2 s is far above the agent's usual
// delay and short enough for the connection to fail like one lost SYN. Why the failure
// policy at the bound: it is the verdict for "cannot judge" everywhere else. The cost: the
// kernel rules add two set lookups for new packets of unisolated pods (no queueing once the
// pod is known), and the reader one check per Decider miss (a prefix scan and a map
// lookup; nothing for cache hits, nothing allocated: TestLoopWithWaiterDoesNotAllocate).
// Limits: traffic between two pods on one bridge is switched, not routed, and never
// reaches the forward hook (podwall sees it only with br_netfilter); a pod address outside
// the configured ranges is not held (the agent needs the Node's spec.podCIDRs or --pod-cidr).
// Between a new pod and its own node (the node's input and output hooks, below) the window
// applies only while a ClusterNetworkPolicy could deny that traffic in that direction:
// otherwise a pod and its node are always allowed, and nothing is held.
//
// Where the queued packets come from. Most come from the nft table's forward hook (pod to pod,
// pod to and from other nodes and the outside). Traffic between a local pod and its own node
// (its addresses, its host-network pods) never crosses forward: a pod's packet to its node is
// the node's input, the node's packet to a pod its output. The table's input and output
// chains queue those (package nft, "A pod and its own node") for the pods a
// ClusterNetworkPolicy can cut off from their node, and for pods the policy does not know yet
// while one could (the new-pod window there), to the same queues: the reader judges — or
// holds — them like any other packet, and the Decider knows the node's addresses (Decide
// judges a pod and its own node by the ClusterNetworkPolicy tiers only). A packet of the output hook
// (sent by the node's own sockets) has no input interface; the reader does not need one.
//
// Established traffic never reaches this package in either mode: conntrack accepts it in the
// kernel before the queue rules. Nor does any packet of a connection that a policy change
// revoked: package conntrack marks its entry, and the kernel drops its packets in both
// directions before the established accept (package nft, "Before the established accept").
// A revoked connection therefore never comes back as a "new" connection started by its
// other end (which conntrack would pick up mid-stream, and this package would judge in that
// other direction); it stays cut until its entry times out (package conntrack, "What
// revocation guarantees"). Nor do the repeats of a flow denied a moment ago (a retried
// SYN, a repeated datagram) while the kernel's deny cache holds it (package nft, "The deny
// cache"; the agent fills it from the verdicts it observes).
package datapath
