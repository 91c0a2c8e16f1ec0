// Package whatif answers "what would this change break?" from real traffic: it applies a
// proposed change (objects that replace or add, and deletions) to the policy state in force,
// re-judges the flows the agents recorded (their /debug/flows, a flow log, or `podwall tail
// -o json` output) under the state in force and under the changed state, and reports every
// flow whose verdict would change, newly denied first, grouped by the policies responsible.
// `podwall what-if` is its command; the command only fetches and prints.
//
// # Flows
//
// Read takes NDJSON lines of type "flow" (policy/flows.Line: /debug/flows and the flow log)
// and "decision" (policy/decisions.Event: /debug/decisions, `podwall tail -o json`; one
// connection each; malformed packets skipped); lines of other types ("dropped") are skipped.
// A flow is (source, destination, protocol, destination port). Its connections are summed
// per node (a flow log has one line per interval) and the largest node's count is taken
// across nodes, since the agents of both ends each see the same connections.
//
// # Judging
//
// Both states are compiled with policy.Compile, the compiler the agent uses, with no local
// node: a flow is judged in both directions, wherever its pods run, and its pods are found by
// address in each state (a proposed pod with new labels, or a deleted one, counts). A flow's
// verdict is the verdict of both directions (policy.Decision.Verdict). A change is
// "newly-denied" or "newly-allowed"; it is attributed to the policies that decide the flow
// after the change: for a newly denied flow the policies isolating its denying direction(s),
// for a newly allowed one the policies whose rules now allow it, or, when the flow is no
// longer isolated at all, the policies that denied it before.
package whatif
