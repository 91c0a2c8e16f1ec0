package main

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/podwall/podwall/conntrack"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// This file owns what happens to flows already admitted when policy changes: unless
// --keep-established, the conntrack entries of connections that the policy in force denies
// are deleted (package conntrack), so their next packet is queued and judged again.

func (o *runOpts) addRevokeFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.keepEstablished, "keep-established", false,
		"keep established connections that a policy change denies (default: revoke them by deleting their conntrack entries)")
}

// startRevoker opens this network namespace's conntrack table, registers the revocation
// metrics and starts the revoker, unless --keep-established. stop ends it; a sweep in
// progress finishes first.
func (a *agent) startRevoker(ctx context.Context) (stop func(), err error) {
	sweepSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "podwall", Subsystem: "conntrack",
		Name: "sweep_seconds", Help: "Time to read the conntrack table and delete the entries the new policy denies.",
		Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16)})
	var table *conntrack.Table
	if !a.o.keepEstablished {
		if table, err = conntrack.Open(); err != nil {
			return nil, fmt.Errorf("%w (or run with --keep-established)", err)
		}
		a.revoker = conntrack.NewRevoker(conntrack.Config{Kernel: table, Log: a.log, OnSweep: func(res conntrack.Result) {
			sweepSeconds.Observe(res.Took.Seconds())
			switch {
			case res.Err != nil:
				a.log.Error("revoking denied connections", "generation", res.Generation, "revoked", res.Revoked, "err", res.Err)
			case res.Revoked > 0:
				a.log.Info("revoked denied connections", "generation", res.Generation, "revoked", res.Revoked,
					"scanned", res.Scanned, "took", res.Took, "flows", flowStrings(res.Denied))
			default:
				a.log.Debug("conntrack sweep", "generation", res.Generation, "scanned", res.Scanned, "judged", res.InScope, "took", res.Took)
			}
		}})
	}
	r := a.revoker // nil with --keep-established: the series stay at 0
	stat := func(name, help string, f func(conntrack.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "podwall", Subsystem: "conntrack", Name: name, Help: help},
			func() float64 {
				if r == nil {
					return 0
				}
				return float64(f(r.Stats()))
			})
	}
	a.metrics.reg.MustRegister(sweepSeconds,
		stat("revoked_total", "Conntrack entries deleted because the policy in force denies their connection.", func(s conntrack.Stats) uint64 { return s.Revoked }),
		stat("sweeps_total", "Sweeps of the conntrack table after a policy change.", func(s conntrack.Stats) uint64 { return s.Sweeps }),
		stat("scanned_total", "Conntrack entries read by sweeps.", func(s conntrack.Stats) uint64 { return s.Scanned }),
		stat("sweep_errors_total", "Sweeps that failed to read the table or to delete an entry.", func(s conntrack.Stats) uint64 { return s.Errors }),
	)
	if r == nil {
		return func() {}, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
		table.Close()
	}, nil
}

// afterApply runs after a new snapshot is in force and the kernel sets match it (old is
// nil at start, when cur is the first policy over whatever conntrack holds). It asks for a
// sweep and returns at once.
func (a *agent) afterApply(old, cur *policy.Snapshot) {
	if a.revoker != nil {
		a.revoker.Request(snapPolicy{cur})
	}
}

// snapPolicy is a snapshot as the revoker's policy: it judges exactly as the datapath does.
type snapPolicy struct{ *policy.Snapshot }

func (p snapPolicy) Isolated() (ingress, egress []netip.Addr) { return p.LocalIsolated() }

func (p snapPolicy) Allow(f conntrack.Flow) bool {
	d := p.Decide(flow.Flow{Src: f.Src, Dst: f.Dst, Proto: flow.Proto(f.Proto), Port: f.Port})
	return d.LocalVerdict() == policy.Allow
}

func flowStrings(fs []conntrack.Flow) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = fmt.Sprintf("%v %v → %v", flow.Proto(f.Proto), f.Src, netip.AddrPortFrom(f.Dst, f.Port))
	}
	return out
}
