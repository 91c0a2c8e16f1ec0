package nft

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Names of the kernel objects this package owns.
const (
	TableName = "podwall"
	ChainName = "forward"

	SetIngress4 = "ingress4"
	SetIngress6 = "ingress6"
	SetEgress4  = "egress4"
	SetEgress6  = "egress6"

	SetDenied4 = "denied4"
	SetDenied6 = "denied6"

	SetAllowed4 = "allowed4"
	SetAllowed6 = "allowed6"
)

// DenyCacheSize is the most flows each deny-cache set (denied4, denied6) holds. Beyond it
// the kernel refuses additions (AddDenied fails) until elements time out: the repeats of
// the flows left out reach the queue, as they would without a cache. 65,536 elements of
// at most 40 bytes of key cost a few MiB of kernel memory at worst.
const DenyCacheSize = 65536

// AllowCacheSize is the most flows each allow-cache set (allowed4, allowed6) holds; as with
// the deny cache, additions beyond it fail and the flows left out go on being queued.
const AllowCacheSize = 65536

// ChainPriority is the priority of the forward base chain: filter + 10.
//
// Every forward-hook chain runs after every prerouting chain, so kube-proxy's
// DNAT (iptables or nftables mode) has already rewritten a Service address
// to the real backend pod whatever the forward priority is. The choice
// between filter-ish priorities therefore only decides the order against
// the node's other filter chains (iptables FORWARD, firewalld, Docker,
// kube-proxy's filter chains): an accept elsewhere does not
// skip this chain, a drop elsewhere is final. Running just after the
// standard filter priority means packets another firewall drops are never
// sent to userspace — no wasted verdict and no misleading "allowed"
// decision in the live stream for a connection that was dropped anyway.
const ChainPriority = 10

// Queue flags, shared by nft_queue (NFT_QUEUE_FLAG_*) and xt_NFQUEUE v3
// (NFQ_FLAG_*): the values are the same.
const (
	queueFlagBypass    = 0x01
	queueFlagCPUFanout = 0x02
)

// xtNFQInfoV3Size is sizeof(struct xt_NFQ_info_v3) rounded up by XT_ALIGN (8
// bytes on every architecture the kernel supports): the struct is three
// __u16 fields (queuenum, queues_total, flags) with no padding between them,
// six bytes, then two bytes of tail padding from XT_ALIGN.
const xtNFQInfoV3Size = 8

type setDef struct {
	name   string
	family byte // unix.NFPROTO_IPV4 or unix.NFPROTO_IPV6
}

// setDefs lists the sets in the order they are created and rendered.
var setDefs = []setDef{
	{SetIngress4, unix.NFPROTO_IPV4},
	{SetIngress6, unix.NFPROTO_IPV6},
	{SetEgress4, unix.NFPROTO_IPV4},
	{SetEgress6, unix.NFPROTO_IPV6},
}

// deniedDefs lists the deny-cache sets, created and rendered after setDefs.
var deniedDefs = []setDef{
	{SetDenied4, unix.NFPROTO_IPV4},
	{SetDenied6, unix.NFPROTO_IPV6},
}

// allowedDefs lists the allow-cache sets, created and rendered after deniedDefs.
var allowedDefs = []setDef{{SetAllowed4, unix.NFPROTO_IPV4}, {SetAllowed6, unix.NFPROTO_IPV6}}

// cacheKind is one of the kernel's two verdict caches (doc.go, "The deny cache" and "The
// allow cache"): its sets, and the verdict its rules give.
type cacheKind struct {
	name string // "deny" or "allow", for errors
	defs []setDef
	size uint32
	// verdict is what a hit gets, word its nft spelling.
	verdict expr.VerdictKind
	word    string
	ttl     func(Config) time.Duration
}

var (
	denyCache = cacheKind{name: "deny", defs: deniedDefs, size: DenyCacheSize,
		verdict: expr.VerdictDrop, word: "drop", ttl: func(c Config) time.Duration { return c.DenyCacheTTL }}
	allowCache = cacheKind{name: "allow", defs: allowedDefs, size: AllowCacheSize,
		verdict: expr.VerdictAccept, word: "accept", ttl: func(c Config) time.Duration { return c.AllowCacheTTL }}
)

// cacheKinds are the verdict caches, in the order of their rules: what a new generation
// empties.
var cacheKinds = []cacheKind{denyCache, allowCache}

// cacheSets returns the sets of every cache kind that cfg turns on.
func cacheSets(t *nftables.Table, cfg Config) []*nftables.Set {
	var out []*nftables.Set
	for _, k := range cacheKinds {
		out = append(out, k.sets(t, cfg)...)
	}
	return out
}

// rule is one rule of the forward chain: its nft text and the expressions
// that build it.
type rule struct {
	text  string
	exprs []expr.Any
}

// ruleset is the whole desired kernel state, built without touching the
// kernel.
type ruleset struct {
	table *nftables.Table
	sets  []*nftables.Set // the address sets, setDefs
	// caches are the verdict caches' sets (cacheSets): none when the caches are off.
	caches []*nftables.Set
	// window are the new-pod window's sets: local4, local6, podranges4, podranges6.
	window []*nftables.Set
	chain  *nftables.Chain
	rules  []rule
}

func newTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

func newSet(t *nftables.Table, d setDef) *nftables.Set {
	key := nftables.TypeIPAddr
	if d.family == unix.NFPROTO_IPV6 {
		key = nftables.TypeIP6Addr
	}
	return &nftables.Set{Table: t, Name: d.name, KeyType: key}
}

// newSet returns a set of cache k: a flow key (source address . destination address
// . protocol . destination port, each field padded to 4 bytes as in the registers) whose
// elements time out after ttl.
func (k cacheKind) newSet(t *nftables.Table, d setDef, ttl time.Duration) *nftables.Set {
	addr := nftables.TypeIPAddr
	if d.family == unix.NFPROTO_IPV6 {
		addr = nftables.TypeIP6Addr
	}
	return &nftables.Set{
		Table: t, Name: d.name,
		KeyType:       nftables.MustConcatSetType(addr, addr, nftables.TypeInetProto, nftables.TypeInetService),
		Concatenation: true,
		HasTimeout:    true, Timeout: ttl,
		Size: k.size,
	}
}

// sets returns the sets of cache k in a ruleset with cfg: none when its TTL is 0 (off).
func (k cacheKind) sets(t *nftables.Table, cfg Config) []*nftables.Set {
	ttl := k.ttl(cfg)
	if ttl == 0 {
		return nil
	}
	var out []*nftables.Set
	for _, d := range k.defs {
		out = append(out, k.newSet(t, d, ttl))
	}
	return out
}

func newChain(t *nftables.Table) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name:     ChainName,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookForward,
		Priority: nftables.ChainPriorityRef(ChainPriority),
		Policy:   &accept,
	}
}

// build returns the ruleset for cfg with the queue rendered in mode, which
// must be ModeNative or ModeCompat. cfg must be valid.
func build(cfg Config, mode QueueMode) ruleset {
	t := newTable()
	rs := ruleset{table: t, chain: newChain(t)}
	for _, d := range setDefs {
		rs.sets = append(rs.sets, newSet(t, d))
	}
	rs.caches = cacheSets(t, cfg)

	// Before the established accept: nothing the kernel lets through as part of a known
	// connection may bypass them.
	rs.rules = append(rs.rules, antiSpoofRules(cfg)...)
	rs.rules = append(rs.rules, revokedRules(cfg)...)

	rs.rules = append(rs.rules, establishedRule())

	for _, k := range cacheKinds {
		rs.rules = append(rs.rules, k.rules(cfg, cacheGate{})...)
	}

	queueText, queueExpr := queueAction(cfg, mode)
	for _, m := range []struct {
		set    string
		family byte
		field  string // "saddr" or "daddr"
	}{
		// ip saddr @egress4 counter <queue>
		{SetEgress4, unix.NFPROTO_IPV4, "saddr"},
		// ip6 saddr @egress6 counter <queue>
		{SetEgress6, unix.NFPROTO_IPV6, "saddr"},
		// ip daddr @ingress4 counter <queue>
		{SetIngress4, unix.NFPROTO_IPV4, "daddr"},
		// ip6 daddr @ingress6 counter <queue>
		{SetIngress6, unix.NFPROTO_IPV6, "daddr"},
	} {
		rs.rules = append(rs.rules, addrQueueRule(m.set, m.family, m.field, queueText, queueExpr))
	}
	rs.window = windowSets(t)
	rs.rules = append(rs.rules, windowRules(queueText, queueExpr)...)
	return rs
}

// cacheGate limits the cache rules of a chain to the packets of some pods: those whose
// source address (input: a pod's packet to its node) or destination address (output: the
// node's packet to a pod) is in set4 or set6. The zero cacheGate (forward) looks every new
// packet up.
type cacheGate struct {
	set4, set6 string
	daddr      bool
}

// rules returns the rules of cache k, one per family, gated by g; none when the cache is
// off (its TTL 0). The deny cache's:
//
//	ip saddr . ip daddr . meta l4proto . th dport @denied4 counter drop
//	ip6 saddr . ip6 daddr . meta l4proto . th dport @denied6 counter drop
//
// or, gated (input: saddr, output: daddr),
//
//	ip saddr @nodeegress4 ip saddr . ip daddr . meta l4proto . th dport @denied4 counter drop
//
// and the allow cache's the same with @allowed4, @allowed6 and accept.
//
// The deny cache: a new packet of a flow the agent denied less than the TTL ago is dropped
// here, before the queue rules; the allow cache accepts one of a flow it allowed, after the
// deny cache's rules and before the queue rules. The key is the flow as the verdict cache
// keys it (flow.Flow), built in consecutive registers as nft concatenates: each field starts
// at a 4-byte boundary; the kernel zeroes the padding (meta stores one byte in a zeroed
// register, payload zeroes the rest of the last register). A register number below 8 names
// a 16-byte register, 8 and above a 4-byte one; nft writes a 16-byte aligned field with the
// 16-byte name and the kernel lists it so, hence 1, 2, 3 and 17 for IPv6. th dport reads
// bytes 2-3 of the transport header: the destination port of TCP, UDP and SCTP, the only
// protocols AddDenied and AddAllowed put in; for any other protocol the key holds its
// number, which no element has. A non-first fragment has no transport header: th fails and
// the rule does not match. The gate's lookup reads the address already loaded for the key
// (saddr in register 1, daddr in 9 or 2), so the key's set lookup comes last: Counters
// tells the rule by it.
func (k cacheKind) rules(cfg Config, g cacheGate) []rule {
	if k.ttl(cfg) == 0 {
		return nil
	}
	var out []rule
	for i, m := range []struct {
		gate               string
		family             byte
		proto              string
		addrLen            uint32
		saddrOff, daddrOff uint32
		daddrReg, protoReg uint32
		dportReg           uint32
	}{
		{g.set4, unix.NFPROTO_IPV4, "ip", 4, 12, 16, 9, 10, 11},
		{g.set6, unix.NFPROTO_IPV6, "ip6", 16, 8, 24, 2, 3, 17},
	} {
		set := k.defs[i].name
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{m.family}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: m.saddrOff, Len: m.addrLen},
			&expr.Payload{DestRegister: m.daddrReg, Base: expr.PayloadBaseNetworkHeader, Offset: m.daddrOff, Len: m.addrLen},
		}
		text := ""
		if m.gate != "" {
			field, reg := "saddr", uint32(1)
			if g.daddr {
				field, reg = "daddr", m.daddrReg
			}
			text = fmt.Sprintf("%s %s @%s ", m.proto, field, m.gate)
			exprs = append(exprs, &expr.Lookup{SourceRegister: reg, SetName: m.gate})
		}
		text += fmt.Sprintf("%[1]s saddr . %[1]s daddr . meta l4proto . th dport @%s counter %s", m.proto, set, k.word)
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: m.protoReg},
			&expr.Payload{DestRegister: m.dportReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: set},
			&expr.Counter{},
			&expr.Verdict{Kind: k.verdict},
		)
		out = append(out, rule{text: text, exprs: exprs})
	}
	return out
}

// antiSpoofRules returns the reverse-path rules, one per pod interface prefix. They come
// first in the chain, before the established accept: a packet from a pod must carry the
// pod's own address whether or not it belongs to a known connection, or a pod could
// inject packets into another pod's established connections (same tuple, forged source).
// The price is a fib lookup for every forwarded packet from a pod interface, not only for
// the first of each connection (bench/README.md, "Anti-spoofing before the established
// accept").
func antiSpoofRules(cfg Config) []rule {
	var out []rule
	for _, p := range cfg.PodInterfacePrefixes {
		// iifname "<prefix>*" fib saddr . iif oif missing counter drop
		//
		// A shorter comparison on the interface name register is how nft
		// encodes the trailing wildcard. fib looks the source address up
		// as a destination, restricted to the input interface; with the
		// present flag it stores a boolean "a route back through that
		// interface exists" (the kernel zeroes the whole register, and nft
		// compares all four bytes: this is nft's own encoding of
		// "missing"). Missing means the pod sent with an address that is
		// not its own.
		out = append(out, rule{
			text: fmt.Sprintf("iifname %q fib saddr . iif oif missing counter drop", p+"*"),
			exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(p)},
				&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true, FlagPRESENT: true},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
				&expr.Counter{},
				&expr.Verdict{Kind: expr.VerdictDrop},
			},
		})
	}
	return out
}

// revokedRules returns the rule that drops the packets of revoked connections: those whose
// connection mark has the bits of cfg.RevokedMark, set by package conntrack when a policy
// change denies them. It comes before the established accept, and it matches packets in
// both directions of the connection and the ICMP errors related to it: a revoked connection
// stays cut whichever side speaks next, and conntrack never sees a reason to pick it up as
// a new connection in the other direction (it still has the entry). None when
// cfg.RevokedMark is 0.
func revokedRules(cfg Config) []rule {
	if cfg.RevokedMark == 0 {
		return nil
	}
	m := binary.NativeEndian.AppendUint32(nil, cfg.RevokedMark)
	// ct mark & <mark> == <mark> counter drop
	return []rule{{
		text: fmt.Sprintf("ct mark & 0x%08x == 0x%08x counter drop", cfg.RevokedMark, cfg.RevokedMark),
		exprs: []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		},
	}}
}

// addrQueueRule queues what has its source (field "saddr") or destination ("daddr") address
// of family in set: `ip saddr @egress4 counter <queue>`.
func addrQueueRule(set string, family byte, field, queueText string, queueExpr func() expr.Any) rule {
	proto, off, n := "ip", uint32(12), uint32(4) // IPv4 saddr
	if family == unix.NFPROTO_IPV6 {
		proto, off, n = "ip6", 8, 16 // IPv6 saddr
	}
	if field == "daddr" {
		off += n // daddr follows saddr in both headers
	}
	return rule{
		text: fmt.Sprintf("%s %s @%s counter %s", proto, field, set, queueText),
		exprs: []expr.Any{
			// meta nfproto ipv4|ipv6: implicit in "ip"/"ip6" in an inet table.
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			// SetID 0: the kernel resolves the set by name; in Program's batch the set is
			// created (or kept) before the rules.
			&expr.Lookup{SourceRegister: 1, SetName: set},
			&expr.Counter{},
			queueExpr(),
		},
	}
}

// queueAction returns the nft text of the queue verdict and a constructor
// of its expression (a fresh value per rule: expr.Queue normalises itself
// while being marshalled).
func queueAction(cfg Config, mode QueueMode) (string, func() expr.Any) {
	var flags uint16
	if cfg.FailOpen {
		flags |= queueFlagBypass
	}
	if cfg.QueueCount > 1 {
		flags |= queueFlagCPUFanout
	}
	first, last := cfg.QueueNum, cfg.QueueNum+cfg.QueueCount-1

	if mode == ModeNative {
		// queue flags bypass,fanout to <first>-<last>
		text := "queue"
		switch flags {
		case queueFlagBypass:
			text += " flags bypass"
		case queueFlagCPUFanout:
			text += " flags fanout"
		case queueFlagBypass | queueFlagCPUFanout:
			text += " flags bypass,fanout"
		}
		if first == last {
			text += fmt.Sprintf(" to %d", first)
		} else {
			text += fmt.Sprintf(" to %d-%d", first, last)
		}
		return text, func() expr.Any {
			return &expr.Queue{Num: first, Total: cfg.QueueCount, Flag: expr.QueueFlag(flags)}
		}
	}

	// NFQUEUE --queue-balance <first>:<last> --queue-cpu-fanout --queue-bypass
	// (iptables syntax; xt target NFQUEUE revision 3 through nft_compat)
	text := fmt.Sprintf("xt target NFQUEUE --queue-num %d", first)
	if first != last {
		text = fmt.Sprintf("xt target NFQUEUE --queue-balance %d:%d", first, last)
	}
	if flags&queueFlagCPUFanout != 0 {
		text += " --queue-cpu-fanout"
	}
	if flags&queueFlagBypass != 0 {
		text += " --queue-bypass"
	}
	return text, func() expr.Any {
		// struct xt_NFQ_info_v3 in host byte order, padded by XT_ALIGN.
		info := make([]byte, xtNFQInfoV3Size)
		binary.NativeEndian.PutUint16(info[0:], first)
		binary.NativeEndian.PutUint16(info[2:], cfg.QueueCount)
		binary.NativeEndian.PutUint16(info[4:], flags)
		x := xt.Unknown(info)
		return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &x}
	}
}
