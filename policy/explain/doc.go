// Package explain is the JSON form of "why": a Query names a flow the way people do (ns/pod
// or an address, a port, a protocol), an Answer carries the verdict and, per direction, a
// Judgement — the one schema of a judged direction that `podwall explain` (-o json,
// --batch, --matrix -o json), the agent's /debug/explain and the decision stream
// (policy/decisions) all write. Its fields are a contract: add fields, never change or remove
// one.
package explain
