package nft

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// QueueMode selects how the queue rules hand packets to userspace.
type QueueMode int

const (
	// ModeAuto probes the kernel at New: Native when it accepts the nft
	// queue expression, otherwise Compat.
	ModeAuto QueueMode = iota
	// ModeNative renders the nft queue expression (nft_queue,
	// CONFIG_NFT_QUEUE).
	ModeNative
	// ModeCompat renders the xtables NFQUEUE target (revision 3) through
	// nft_compat, for kernels built without nft_queue.
	ModeCompat
)

// String returns "auto", "native" or "compat".
func (m QueueMode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeNative:
		return "native"
	case ModeCompat:
		return "compat"
	}
	return fmt.Sprintf("QueueMode(%d)", int(m))
}

// Config describes the ruleset. The zero value is not valid: QueueCount must
// be at least 1.
type Config struct {
	// QueueNum is the first NFQUEUE number.
	QueueNum uint16
	// QueueCount is the number of queues, QueueNum..QueueNum+QueueCount-1.
	// With more than one queue, packets fan out by CPU.
	QueueCount uint16

	// FailOpen is podwall's single failure policy, as far as the kernel
	// ruleset is concerned:
	//
	//   - false (fail closed, the default): the queue rules have no bypass
	//     flag. When no process serves the queues (agent crashed, restarting,
	//     stopped with Close(true)), the kernel drops every new connection
	//     from an egress-isolated or to an ingress-isolated local pod. Pods
	//     that no policy selects are never queued and keep working;
	//     established connections keep flowing (conntrack accepts them
	//     first).
	//   - true (fail open): the queue rules carry bypass. With no process
	//     bound to a queue the kernel accepts the packet instead of
	//     dropping it, so an agent outage opens isolated pods rather than
	//     cutting them off.
	//
	// In both policies the table stays in place across a restart
	// (Close(true)) so that the next agent takes it over without a window in
	// which isolated pods are unprotected; Close(false) removes it, which is
	// only right on uninstall. Queue overflow and shutdown of the userspace
	// reader follow the same setting in package datapath; a packet whose
	// ports cannot be read is dropped in both (datapath's "Failure policy").
	FailOpen bool

	// PodInterfacePrefixes name the host-side interfaces of pods ("veth",
	// "cali", "pw"). A packet arriving on one of them must carry a source
	// address that routes back through the same interface, otherwise it is
	// dropped as spoofed. Empty: no anti-spoofing rules.
	PodInterfacePrefixes []string

	// Mode selects the queue rendering; ModeAuto probes the kernel.
	Mode QueueMode

	// RevokedMark is the bit (or bits) of the connection mark that flags a revoked
	// connection (package conntrack sets it when a policy change denies one): every packet
	// of a connection whose mark has all of them is dropped, in both directions, before
	// the established accept. 0: no such rule.
	RevokedMark uint32

	// DenyCacheTTL is how long the kernel drops new packets of a flow the agent has just
	// denied, without queueing them (the deny cache: sets denied4 and denied6, filled by
	// AddDenied, emptied by every Sync of a new generation). In whole milliseconds, at
	// most MaxDenyCacheTTL; 0 turns the cache off: no sets, no rules.
	DenyCacheTTL time.Duration

	// AllowCacheTTL is how long the kernel accepts new packets of a flow the agent has
	// allowed, without queueing them (the allow cache: sets allowed4 and allowed6, filled by
	// AddAllowed, emptied by every Sync of a new generation). In whole milliseconds, at most
	// MaxAllowCacheTTL; 0 (the default) turns it off: no sets, no rules, and every new
	// connection of a judged pod is queued, and so seen by the stream and counted.
	AllowCacheTTL time.Duration

	// NetNS, when above 0, is an open file descriptor of a network namespace
	// (/proc/PID/ns/net, /run/netns/NAME, a netns.NsHandle) that New programs
	// instead of the calling thread's. It is used only while New runs; the
	// caller keeps ownership.
	NetNS int
}

// MaxDenyCacheTTL bounds Config.DenyCacheTTL. The cache is correct for any TTL (a new
// policy empties it), but a denied flow's repeats are invisible to the agent's verdict
// counters and decision stream while it holds them: beyond a minute that hides more than
// it saves.
const MaxDenyCacheTTL = time.Minute

// MaxAllowCacheTTL bounds Config.AllowCacheTTL, for the same reason: the connections the
// cache accepts are invisible to the agent's verdict counters, the decision stream and the
// flow history while it holds them.
const MaxAllowCacheTTL = time.Minute

// ifNameMax is IFNAMSIZ-1: the longest interface name the kernel accepts.
const ifNameMax = 15

// Validate reports every problem of c together.
func (c Config) Validate() error {
	var errs []error
	if c.QueueCount == 0 {
		errs = append(errs, errors.New("queue count must be at least 1"))
	} else if int(c.QueueNum)+int(c.QueueCount)-1 > 0xffff {
		errs = append(errs, fmt.Errorf("queues %d..%d exceed 65535", c.QueueNum, int(c.QueueNum)+int(c.QueueCount)-1))
	}
	seen := map[string]bool{}
	for _, p := range c.PodInterfacePrefixes {
		switch {
		case p == "":
			errs = append(errs, errors.New("empty pod interface prefix (would match every interface)"))
		case len(p) > ifNameMax:
			errs = append(errs, fmt.Errorf("pod interface prefix %q longer than %d bytes", p, ifNameMax))
		case strings.ContainsAny(p, "\x00*\"\\"):
			errs = append(errs, fmt.Errorf("pod interface prefix %q contains NUL, '*', '\"' or '\\'", p))
		case seen[p]:
			errs = append(errs, fmt.Errorf("duplicate pod interface prefix %q", p))
		}
		seen[p] = true
	}
	for _, k := range []struct {
		name     string
		ttl, max time.Duration
	}{{"deny", c.DenyCacheTTL, MaxDenyCacheTTL}, {"allow", c.AllowCacheTTL, MaxAllowCacheTTL}} {
		switch {
		case k.ttl < 0, k.ttl > k.max:
			errs = append(errs, fmt.Errorf("%s cache TTL %v outside 0 (off) to %v", k.name, k.ttl, k.max))
		case k.ttl%time.Millisecond != 0:
			errs = append(errs, fmt.Errorf("%s cache TTL %v not in whole milliseconds (the kernel's unit)", k.name, k.ttl))
		}
	}
	switch c.Mode {
	case ModeAuto, ModeNative, ModeCompat:
	default:
		errs = append(errs, fmt.Errorf("unknown queue mode %d", int(c.Mode)))
	}
	if len(errs) > 0 {
		return fmt.Errorf("nft config: %w", errors.Join(errs...))
	}
	return nil
}
