package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podwall/podwall/policy/decisions"
)

// The kernel's allow cache (--allow-cache-ttl, datapath/nft doc.go "The allow cache"), with
// the real agent: a client's first connection to an allowed port is queued and allowed; the
// second is too (a hit in the agent's verdict cache), and its decision in the stream says
// the kernel now accepts the flow's new connections for the TTL; the next ones open without
// reaching the agent (0 queued, counted in podwall_datapath_allow_cache_hits_total) and
// without a decision in the stream. Another port is another flow: queued. A policy change
// that denies the cached flow denies the very next connection, and cuts the connections the
// cache let in: the cache never shadows a new policy. Off by default.
//
//	node-1: client, server (ingress: client on 8080-8090/TCP and 80/TCP; later 80/TCP only)
func TestAllowCache(t *testing.T) {
	e, base := newClientServerEnv(t)
	e.write(append(base, serverPolicy("8080-8090/TCP", "80/TCP"))...)
	e.Serve(80, 8080, 8085)
	e.start("--allow-cache-ttl", "10s")
	allows := e.stream("node-1", "?verdict=allow")

	snap := func(fam string) cacheCounts { return e.cacheCounts(fam, "allow") }
	decided := func(fam string, port uint16) []decisions.Event {
		evs, _, err := allows.snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var out []decisions.Event
		for _, ev := range evs {
			if ev.Family == fam && ev.DstPort == port && ev.Src == e.Addr("app/client", fam).String() {
				out = append(out, ev)
			}
		}
		return out
	}
	connect := func(fam string, port uint16) error {
		return e.probe(fam, probe{from: "app/client", to: "app/server", port: port}, time.Second)
	}

	for _, fam := range []string{"IPv4", "IPv6"} {
		t.Run(fam, func(t *testing.T) {
			e := e.sub(t)
			before := snap(fam)
			if err := connect(fam, 8080); err != nil {
				t.Fatalf("the first connection to 8080: %v", err)
			}
			if a := snap(fam).adds; a != before.adds {
				t.Errorf("a flow seen once went into the allow cache (%v added)", a-before.adds)
			}
			if err := connect(fam, 8080); err != nil {
				t.Fatalf("the second connection to 8080: %v", err)
			}
			e.waitFor(func() bool { return snap(fam).adds > before.adds },
				func() string { return "the allowed flow never went into the allow cache" })
			mid := snap(fam)
			if q := mid.queued - before.queued; q != 2 {
				t.Errorf("the first two connections: %v packets queued, want 2", q)
			}
			for range 4 {
				if err := connect(fam, 8080); err != nil {
					t.Errorf("a connection to 8080 with the flow cached: %v", err)
				}
			}
			after := snap(fam)
			if q, h := after.queued-mid.queued, after.hits-mid.hits; q != 0 || h != 4 {
				t.Errorf("4 connections to 8080 with the flow cached: %v queued, %v accepted by the allow cache; want 0 and 4", q, h)
			}
			// Another port of the same rule is another flow: judged once, then cached too.
			for range 2 {
				if err := connect(fam, 8085); err != nil {
					t.Errorf("a connection to 8085: %v", err)
				}
			}
			if q := snap(fam).queued - after.queued; q < 1 {
				t.Errorf("connections to 8085, another flow: %v queued, want its first", q)
			}
			// Two packets of the flow were queued (above), so the stream has two decisions on it.
			e.waitFor(func() bool { return len(decided(fam, 8080)) >= 2 },
				func() string { return "the stream lacks the flow's two decisions" })
			evs := decided(fam, 8080)
			if len(evs) != 2 || evs[0].KernelAllowTTLms != 0 || !evs[1].CacheHit || evs[1].KernelAllowTTLms != 10000 {
				t.Errorf("stream: %d decisions on the flow, want two, the second a cache hit with kernelAllowTTLms 10000: %+v", len(evs), evs)
			}
		})
	}

	// Both families' flows to 8080 are in the cache for 10 s; the policy now allows port 80
	// only: the very next connection to 8080 is queued and denied.
	t.Run("never shadows a new policy", func(t *testing.T) {
		e := e.sub(t)
		// Connections the kernel accepted from the cache are revoked like any other.
		var hs []*held
		for _, fam := range []string{"IPv4", "IPv6"} {
			before := snap(fam)
			hs = append(hs, e.hold("cut", fam, "app/client", "app/server", "tcp", 8080))
			if after := snap(fam); after.hits != before.hits+1 || after.queued != before.queued {
				t.Fatalf("%s: the connection to hold was not accepted by the allow cache (hits %v → %v, queued %v → %v)",
					fam, before.hits, after.hits, before.queued, after.queued)
			}
		}
		ct, edited := e.conntrackOf("node-1"), time.Now()
		e.rewrite(append(base, serverPolicy("80/TCP"))...)
		ct.waitGone(e, edited, hs) // revoked by the sweep the new policy starts
		e.checkHeld(hs)
		for _, fam := range []string{"IPv4", "IPv6"} {
			before := snap(fam)
			if err := e.probe(fam, probe{from: "app/client", to: "app/server", port: 8080}, 300*time.Millisecond); err == nil {
				t.Errorf("%s: a connection the new policy denies opened (the old allow shadowed it)", fam)
			}
			after := snap(fam)
			if q, h := after.queued-before.queued, after.hits-before.hits; q < 1 || h != 0 {
				t.Errorf("%s: %v queued, %v accepted by the allow cache; want ≥ 1 and 0", fam, q, h)
			}
		}
		e.check(probe{from: "app/client", to: "app/server", port: 80, allow: true})
	})

	t.Run("off by default", func(t *testing.T) {
		e := e.sub(t)
		if err := e.Agents["node-1"].Stop(syscall.SIGTERM, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		e.startOn("node-1")
		if table, _ := e.ruleset("node-1"); strings.Contains(table, "allowed") {
			t.Errorf("allow cache off by default, the table has it:\n%s", table)
		}
		before := snap("IPv4")
		for range 3 {
			if err := connect("IPv4", 80); err != nil {
				t.Fatal(err)
			}
		}
		if q := snap("IPv4").queued - before.queued; q != 3 {
			t.Errorf("allow cache off: %v of 3 connections queued", q)
		}
		if h := snap("IPv4").hits; h != 0 {
			t.Errorf("allow cache off: %v packets accepted by it", h)
		}
	})
}
