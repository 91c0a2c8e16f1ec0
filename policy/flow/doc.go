// Package flow is podwall's vocabulary for what is judged: the first packet of a connection
// as a Flow, and the IP protocol it uses as a Proto. Every layer speaks it — the packet
// decoder and the queue readers (datapath), the verdict cache, the policy engine, the
// conntrack revoker and the decision stream — so a flow crosses package boundaries without
// conversion. It depends on nothing but the standard library.
package flow
