package agent

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/datapath/nft"
	"github.com/podwall/podwall/policy"
)

// This file keeps the kernel table in place while the agent runs. Someone else can take it
// away — `nft flush ruleset` (what a restart of nftables.service does), `nft delete table
// inet podwall`, a script emptying the chain or a set, or making the table dormant — and
// then no pod is isolated while everything else looks fine. The agent checks the table
// every tableCheckInterval, and the sets' elements every elementsEvery checks
// (nft.Ruleset.Damage); when it is damaged it reports not ready, programs the table and
// the sets of the snapshot in force again in one transaction (ProgramSyncWindow, as at
// start, with the new-pod window's sets; under the apply lock, so no policy change
// interleaves), sweeps conntrack for the connections admitted unjudged meanwhile, counts
// the restore and reports ready again.
//
// Why a poll, not netlink events (NFNLGRP_NFTABLES, google/nftables' Monitor): the events
// carry every change of every table of the namespace — kube-proxy's in nftables mode,
// element by element — and the library decodes each one; a burst that overflows the
// socket (ENOBUFS) ends the monitor, and a missed deletion would go unnoticed for good.
// The poll reads two small things (the table, the chain's rules: 0.1–0.7 ms), and once a
// second the four address sets of local pods (about 1–3 ms with 110 pods isolated both
// ways; bench/README.md, "Table check").

// tableCheckInterval is how often the agent checks its table: a damaged table is restored
// within this interval plus one transaction.
const tableCheckInterval = 200 * time.Millisecond

// elementsEvery is how many checks apart the sets' elements are compared too: once a
// second. Reading them costs ten times the rest of a check.
const elementsEvery = 5

// newRestores returns podwall_datapath_table_restores_total (cmd/podwall/README.md).
func newRestores() prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "datapath",
		Name: "table_restores_total",
		Help: "Times the agent found its table (inet podwall) removed or damaged by someone else and programmed it again from the snapshot in force."})
}

// guardTable checks the table every tableCheckInterval until ctx ends, and restores it
// when it is damaged.
func (a *Agent) guardTable(ctx context.Context) {
	t := time.NewTicker(tableCheckInterval)
	defer t.Stop()
	failing := false // the last check failed: log the next failure at debug level only
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		damage, err := a.ruleset.Damage(n%elementsEvery == elementsEvery-1)
		if err != nil {
			if !failing {
				a.log.Warn("checking the table", "err", err)
			}
			failing = true
			continue
		}
		failing = false
		if damage != "" {
			a.restoreTable(damage)
		}
	}
}

// restoreTable programs the table and the sets of the snapshot in force again; until that
// succeeds, /readyz reports the damage.
func (a *Agent) restoreTable(damage string) {
	msg := "datapath: " + damage
	a.damage.Store(&msg)
	a.ready.Store(false)
	a.log.Warn("table damaged by someone else: restoring it", "damage", damage)
	a.mu.Lock()
	snap, err := a.programInForce(a.ruleset)
	if err == nil {
		a.afterApply(snap) // cut what was admitted unjudged meanwhile
	}
	a.mu.Unlock()
	if err != nil {
		a.log.Error("restoring the table", "err", err)
		return // not ready; the next check tries again
	}
	a.restores.Inc()
	a.damage.Store(nil)
	a.ready.Store(true)
	a.log.Info("table restored", "generation", snap.Generation())
}

// programInForce programs rs — the table, or the one found, taken over — holding the sets of
// the snapshot in force and the window's, in one transaction, and returns that snapshot.
// Called under mu (start-up and restoreTable).
func (a *Agent) programInForce(rs *nft.Ruleset) (*policy.Snapshot, error) {
	snap := a.inForce.Load()
	in, eg := a.staged.queued(snap)
	var ranges []netip.Prefix
	if p := a.inForce.ranges.Load(); p != nil {
		ranges = *p
	}
	return snap, rs.ProgramSyncWindow(snap.Generation(), in, eg, window(snap, ranges))
}
