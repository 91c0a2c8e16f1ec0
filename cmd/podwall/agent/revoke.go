package agent

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/podwall/podwall/conntrack"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// This file owns what happens to flows already admitted when policy changes: unless
// KeepEstablished, the conntrack entries of connections that the policy in force denies are
// marked revoked (package conntrack; RevokeMark), and the kernel table drops every packet of
// a marked connection, in both directions (datapath/nft).

// startRevoker opens this network namespace's conntrack table and starts the revoker, unless
// KeepEstablished (its series then stay at 0). stop ends it; a sweep in progress finishes
// first.
func (a *Agent) startRevoker(ctx context.Context) (stop func(), err error) {
	if a.cfg.KeepEstablished {
		return func() {}, nil
	}
	table, err := conntrack.Open()
	if err != nil {
		return nil, fmt.Errorf("%w (or run with --keep-established)", err)
	}
	a.revoker.SetKernel(table)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.revoker.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
		table.Close()
	}, nil
}

// swept logs one sweep's result.
func (a *Agent) swept(res conntrack.Result) {
	switch {
	case res.Err != nil:
		a.log.Error("revoking denied connections", "generation", res.Generation, "revoked", res.Revoked, "err", res.Err)
	case res.Revoked > 0:
		a.log.Info("revoked denied connections", "generation", res.Generation, "revoked", res.Revoked,
			"scanned", res.Scanned, "took", res.Took, "flows", flowStrings(res.Denied))
	default:
		a.log.Debug("conntrack sweep", "generation", res.Generation, "scanned", res.Scanned, "judged", res.InScope, "took", res.Took)
	}
}

// afterApply runs after a new snapshot is in force and the kernel sets match it (at start,
// the first policy over whatever conntrack holds). It asks for a sweep and returns at once.
func (a *Agent) afterApply(cur *policy.Snapshot) {
	if !a.cfg.KeepEstablished {
		a.revoker.Request(snapPolicy{cur})
	}
}

// snapPolicy is a snapshot as the revoker's policy: it judges exactly as the datapath does.
type snapPolicy struct{ *policy.Snapshot }

func (p snapPolicy) Isolated() (ingress, egress []netip.Addr) { return p.LocalIsolated() }

func (p snapPolicy) Allow(f flow.Flow) bool {
	d := p.Decide(f)
	return d.LocalVerdict() == policy.Allow
}

func flowStrings(fs []flow.Flow) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.String()
	}
	return out
}
