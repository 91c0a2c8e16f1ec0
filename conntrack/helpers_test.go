package conntrack

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/policy/flow"
)

// reverse returns the reply tuple of t without NAT.
func reverse(t Tuple) Tuple {
	r := t
	r.Src, r.Dst, r.SrcPort, r.DstPort = t.Dst, t.Src, t.DstPort, t.SrcPort
	switch t.ICMPType {
	case 8:
		r.ICMPType = 0
	case 128:
		r.ICMPType = 129
	}
	return r
}

// entryAttrs returns the attributes of an entry as ctnetlink writes them.
func entryAttrs(e *Entry) []byte {
	ae := encoder()
	encodeTuple(ae, ctaTupleOrig, e.Orig)
	encodeTuple(ae, ctaTupleReply, e.Reply)
	ae.Uint32(ctaStatus, e.Status)
	ae.Uint32(ctaMark, e.Mark)
	if e.Zone != 0 {
		ae.Uint16(ctaZone, e.Zone)
	}
	if e.Orig.Proto == flow.TCP {
		encodeTCPState(ae, e.TCPState)
	}
	ae.Uint32(ctaID, e.ID)
	return mustEncode(ae)
}

// entryMessage is the message ctnetlink answers a dump or a get with, for e.
func entryMessage(e *Entry) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: msgCtNew}, Data: append([]byte{e.Family, unix.NFNETLINK_V0, 0, 0}, entryAttrs(e)...)}
}

// tuplePayload returns the payload of CTA_TUPLE_ORIG for t.
func tuplePayload(t Tuple) []byte {
	ae := encoder()
	encodeTuple(ae, ctaTupleOrig, t)
	return mustEncode(ae)[4:]
}

func encodeTCPState(ae *netlink.AttributeEncoder, s TCPState) {
	ae.Nested(ctaProtoinfo, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(ctaProtoinfoTCP, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(ctaProtoinfoTCPState, uint8(s))
			return nil
		})
		return nil
	})
}

func mustEncode(ae *netlink.AttributeEncoder) []byte {
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

// create inserts entries into the kernel table, like conntrack -I (TCP ones established),
// in batches of 256.
func create(tab *Table, entries ...*Entry) error {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	var errs []error
	for len(entries) > 0 {
		batch := entries[:min(256, len(entries))]
		entries = entries[len(batch):]
		reqs := make([]netlink.Message, len(batch))
		for i, e := range batch {
			ae := encoder()
			encodeTuple(ae, ctaTupleOrig, e.Orig)
			encodeTuple(ae, ctaTupleReply, e.Reply)
			ae.Uint32(ctaTimeout, 300)
			if e.Mark != 0 {
				ae.Uint32(ctaMark, e.Mark)
			}
			if e.Zone != 0 {
				ae.Uint16(ctaZone, e.Zone)
			}
			if e.Orig.Proto == flow.TCP {
				encodeTCPState(ae, TCPEstablished)
			}
			reqs[i] = request(msgCtNew, netlink.Create|netlink.Excl|netlink.Acknowledge, family(e.Orig), mustEncode(ae))
		}
		err := tab.exchange(reqs, func(i int, _ netlink.Message, err error) {
			if err != nil {
				errs = append(errs, fmt.Errorf("create %v: %w", batch[i], err))
			}
		})
		if err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// inNetNS runs fn on a thread in a fresh network namespace; it skips without root.
func inNetNS(t testing.TB, fn func()) {
	t.Helper()
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and a kernel (not -short)")
	}
	done := make(chan struct{})
	var failure any
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		orig, err := netns.Get()
		if err != nil {
			failure = err
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			failure = fmt.Errorf("new netns: %w", err)
			return
		}
		defer ns.Close()
		defer netns.Set(orig)
		defer func() {
			if r := recover(); r != nil {
				failure = r
			}
		}()
		fn()
	}()
	<-done
	if failure != nil {
		t.Fatal(failure)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func tcp(src, dst string, sport, dport uint16) Tuple {
	return Tuple{Src: mustAddr(src), Dst: mustAddr(dst), Proto: flow.TCP, SrcPort: sport, DstPort: dport}
}

func udp(src, dst string, sport, dport uint16) Tuple {
	return Tuple{Src: mustAddr(src), Dst: mustAddr(dst), Proto: flow.UDP, SrcPort: sport, DstPort: dport}
}

func icmp(src, dst string, id uint16) Tuple {
	a := mustAddr(src)
	if a.Is6() {
		return Tuple{Src: a, Dst: mustAddr(dst), Proto: flow.ICMPv6, ICMPType: 128, ICMPID: id}
	}
	return Tuple{Src: a, Dst: mustAddr(dst), Proto: flow.ICMP, ICMPType: 8, ICMPID: id}
}

// entry returns an entry without NAT.
func entry(orig Tuple) *Entry {
	fam := uint8(unix.AF_INET)
	if orig.Src.Is6() {
		fam = unix.AF_INET6
	}
	return &Entry{Family: fam, Orig: orig, Reply: reverse(orig)}
}

// dnat returns an entry whose destination was translated to (to, port).
func dnat(orig Tuple, to string, port uint16) *Entry {
	e := entry(orig)
	e.Reply.Src, e.Reply.SrcPort = mustAddr(to), port
	return e
}
