// Package decisions is podwall's live decision stream: every verdict the datapath gives, with
// the policy and rule that made it, for `podwall tail`, the live page and anyone who reads
// /debug/decisions.
//
// # Cost
//
// The datapath's observer checks Hub.Active (one atomic load) before anything else: with no
// subscriber the stream costs nothing more. With subscribers it makes a Record — what the
// filters and the encoder need of the policy Decision that made the verdict (the one the flow
// cache kept, on a hit): codes, verdicts, the pods' and the first allowing policy's names, a
// weak reference to the snapshot of its generation, the 5-tuple, timing — and Publish copies
// that small value into each matching subscriber's buffered channel with a non-blocking send.
// A full channel drops the record and counts the loss for that subscriber; the datapath never
// waits. Filters are matched with maps (one lookup per pod, whatever their size) and capped
// (MaxFilterValues values per parameter, MaxFilterValueLen bytes per value).
//
// Nothing is formatted on the datapath: the subscriber's goroutine spells the record out
// (Record.Event, which calls Snapshot.Explain for the reason text) and writes it. A record
// pins no snapshot: a slow reader holding thousands of records across many policy
// generations keeps none of them alive. While the snapshot of a record's generation is held
// (the agent holds the one in force and the one before) its line is complete; after that the
// line carries what the record kept (pods, verdicts, codes, the first allowing rule) and its
// reason ends "(policy generation N is no longer held: …)".
//
// # Stream
//
// GET /debug/decisions (Handler) answers NDJSON (Content-Type application/x-ndjson), one JSON
// object per line, or Server-Sent Events when the request's Accept header has
// text/event-stream (each object as the data of an "event: decision" or "event: dropped"
// message). The subscription exists once the response headers have arrived. Query
// parameters filter (see Filter; repeat a parameter or separate values with commas for
// alternatives):
//
//	namespace=NS         the source or destination pod is in NS
//	pod=NAME|NS/NAME     the source or destination pod is NAME (in any namespace) or NS/NAME
//	verdict=allow|deny   this node's verdict
//	direction=egress|ingress  this node judged that direction by policy (with verdict: and that
//	                     direction gave the verdict)
//	policy=NAME|NS/NAME  that policy took part on this node (allowed, or isolated a denying direction)
//	buffer=N             records this subscriber's buffer holds (default 4096, at most 16384)
//
// At most 256 values per parameter and 317 bytes per value (a namespace, "/", a name): a
// longer filter gets 400 naming the parameter and the limit. At most 64 subscribers at once,
// whose buffers hold at most 262,144 records together (64 default buffers; a buffer is cut
// to what is left): past either limit a subscriber gets 503.
//
// A decision line (the Event type; fields are only ever added):
//
//	type        "decision"
//	time        when the packet was received, RFC 3339 with nanoseconds
//	node        the node whose agent decided
//	family      "IPv4" or "IPv6"
//	protocol    "TCP", "UDP", "SCTP", "ICMP", "ICMPv6" or "proto-N"
//	src, dst    addresses; srcPort, dstPort: ports (0 for protocols without ports)
//	srcPod, dstPod  "namespace/name" when the address is a pod's (absent otherwise)
//	verdict     "allow" or "deny": what this node did with the packet
//	reason      one line: the denying direction's reason (both, if both deny), or when
//	            allowed the reasons of every direction judged on this node, "; "-joined
//	policies    "namespace/name" of the policies that made the verdict: for a deny the
//	            policies isolating the pod for the denying direction(s), for an allow the
//	            policies whose rules allowed it (absent when no policy was involved)
//	egress, ingress  one object per direction (absent for malformed packets):
//	    verdict     "allow" or "deny"
//	    code        no-pod, self, own-node, not-isolated, allowed or no-rule-allows
//	    pod         the pod judged: the source for egress, the destination for ingress
//	    local       whether this node judges the direction (its pod runs here); the other
//	                direction is enforced by the other node's agent and shown for information
//	    policies    as above, for this direction
//	    allowedBy   [{"policy","rule"}]: every rule that allows the flow (rule indexes
//	                spec.egress or spec.ingress)
//	    isolatedBy  the policies isolating the pod for this direction
//	    reason      this direction's reason, e.g. "prod/db is isolated for ingress by
//	                db-policy; no rule allows TCP/3306 from prod/web"
//	cacheHit    whether the flow cache answered
//	latencyNs   time from receiving the packet to its verdict, in nanoseconds
//	queue       the NFQUEUE queue number
//	kernelDenyTTLms  set on a deny whose flow went into the kernel's deny cache: for this
//	            many milliseconds the kernel itself drops new packets of the flow (same
//	            source, destination, protocol and destination port: a retried SYN, a
//	            repeated datagram), so they never reach the agent and no line shows them;
//	            podwall_datapath_deny_cache_hits_total counts them. A policy change ends
//	            it at once. Absent otherwise (allowed, the cache off, a protocol without
//	            ports, or the cache's queue full).
//	generation  the policy snapshot generation the reasons come from
//	malformed   set when the packet could not be judged: headers that cannot be read
//	            are denied whatever the failure policy; a later fragment or an
//	            unreadable NFQUEUE message gets the failure policy's verdict
//	staged      with staged policies present (podwall.io/staged, SPEC §2c), when this
//	            node's verdict under the enforced plus staged policies differs from
//	            verdict or a staged policy took part in it: {"verdict","reason",
//	            "policies"} read as verdict, reason and policies above; absent otherwise
//
// Loss: when records were dropped for a subscriber because it read too slowly, its stream
// says so, at the next record or within a second: {"type":"dropped","count":N}, N the records
// lost since the previous such line. Readers should skip types they do not know.
//
// GET /debug/ (Page) is a live page built on the stream (SSE), embedded in the binary.
//
// The stream's metrics are listed in README.md beside this file.
package decisions
