// Package flows owns podwall's record of the distinct flows an agent judged: the bounded
// history served at /debug/flows (the input of `podwall what-if`) and the flow log that
// `podwall run --flow-log` writes for log shippers.
//
// # Hand-off
//
// The datapath's observer hands every verdict over, on a queue reader's goroutine: it fills
// a 136-byte Seen (flow, time, generation, verdict, the staged verdict with the id of the
// staged proposal that gave it, and what the observer's counters need: cache hit, latency,
// the judged directions) in place in that reader's own ring (Recorder.Slot, Commit; Offer
// copies one) — single producer, single consumer, two atomic counters: no lock, no
// wake-up, nothing another reader touches — and returns; a full ring loses the verdict and
// counts it (podwall_flows_lost_total), and tells the observer, which then counts it
// itself. One goroutine (Recorder.Run) drains the rings every 5 ms — polling, so that the
// readers never pay for waking it — has the observer count each verdict
// (Config.Count: the agent's verdict metrics) and records it in the history and in the
// current interval of the flow log: a map lookup and a few numbers, nothing allocated. A
// scrape calls Recorder.Flush, which drains on the caller's goroutine first, so counters
// are exact when read; Count's pointers into the deciding snapshot are cleared once
// counted, so a drained ring holds none.
//
// # History
//
// The history keeps at most Config.Size flows (default 100 000) and evicts the least recently
// seen. A flow is (source, destination, protocol, destination port) — flow.Flow: all
// connections from one client to one service are one flow. An entry holds the first and last
// time seen, the number of judged packets (one per new connection: conntrack carries the
// rest; a retransmitted first packet counts again, and packets the kernel's deny cache drops
// are not counted), and the last verdict with the policy generation that gave it: no text
// and no pointer (the staged verdict is a bit and a proposal id), so 100 000 flows take 16 MiB (170 bytes a flow: a 96-byte node and its map
// slot, under a packed 36-byte key; BenchmarkMemory) and nothing for the garbage collector to
// scan. The pods, reason and policies are spelled out when a line is made, with the snapshot
// of that generation, as /debug/decisions spells a decision out: the agent keeps the one in force and the one
// before; for a flow decided by an older one, the line keeps the recorded verdict and its
// reason says what the policy in force would do instead. The staged verdict is spelled
// out likewise with the staged proposal that gave it (Config.Proposal: the agent holds the
// one in force); once that is gone, a line keeps the recorded staged verdict when it differs
// from the verdict, with a reason saying its policies are no longer held. Making a line costs an explanation
// (a few µs): /debug/flows and each flow log interval pay it per flow, off the datapath.
//
// # Lines
//
// /debug/flows and the flow log write the same NDJSON line (Line; fields are only ever
// added):
//
//	type         "flow"
//	node         the node whose agent judged the flow
//	family       "IPv4" or "IPv6"
//	protocol     "TCP", "UDP", "SCTP", "ICMP", "ICMPv6" or "proto-N"
//	src, dst     addresses
//	dstPort      destination port (0 for protocols without ports)
//	srcPod       namespace/name of the source pod, when known
//	dstPod       namespace/name of the destination pod, when known
//	first, last  first and last judged packet (in the flow log: within the interval)
//	connections  judged packets (≈ new connections; in the flow log: within the interval)
//	verdict      "allow" or "deny": this node's last verdict
//	reason       why, in one line (as /debug/decisions)
//	policies     the policies that made the verdict (namespace/name)
//	egress, ingress  the judged directions (explain.Judgement, as /debug/decisions); with
//	             policies, left out when the generation that decided is no longer held
//	staged       {"verdict","reason","policies"}: this node's last verdict on the flow were
//	             the staged policies enforced (explain.Staged, as /debug/decisions); left
//	             out unless it differs from verdict or a staged policy took part
//	generation   the policy generation that gave the verdict
//
// # Flow log
//
// With a log writer (File: `--flow-log PATH`), the Recorder cuts an interval every
// Config.Interval (default 10 s) and hands its flows, one Line each, to a writer goroutine.
// At most one interval waits for the writer: when the writer is slower (a slow disk), a
// further interval is dropped whole and its lines counted in podwall_flows_log_lost_total;
// the datapath never waits. File writes each line with one write call to a file opened with
// O_APPEND and rotates by renaming (path → path.1 → … → path.N) when the next line would make
// the file larger than its maximum size. It never calls fsync: after a crash the last lines
// may be lost, never half written. One write per line is not quite enough for that — the
// kernel cuts a write short at a page boundary when the writer is being killed — so File
// widens lines with trailing spaces so that none crosses a 4 KiB boundary (File's doc says
// the limits), and OpenFile cuts off a partial last line before writing again.
//
// # Metrics
//
// Subsystem "flows" (cmd/podwall/README.md lists them with the agent's):
//
//	podwall_flows_lost_total         verdicts not recorded: the hand-off channel was full
//	podwall_flows_tracked            distinct flows in the history
//	podwall_flows_evicted_total      flows evicted from the full history (least recently seen)
//	podwall_flows_log_lines_total    flow log lines written
//	podwall_flows_log_lost_total     flow log lines lost: the writer was behind, or a write failed
//	podwall_flows_log_errors_total   failed writes and rotations of the flow log
//	podwall_flows_log_rotations_total  rotations of the flow log file
package flows
