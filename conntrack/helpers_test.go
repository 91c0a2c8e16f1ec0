package conntrack

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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
	b := tupleAttr(ctaTupleOrig, e.Orig)
	b = append(b, tupleAttr(ctaTupleReply, e.Reply)...)
	b = append(b, nla(ctaStatus, u32(e.Status))...)
	b = append(b, nla(ctaMark, u32(e.Mark))...)
	if e.Zone != 0 {
		b = append(b, nla(ctaZone, u16(e.Zone))...)
	}
	if e.Orig.Proto == 6 {
		b = append(b, nested(ctaProtoinfo, nested(ctaProtoinfoTCP, nla(ctaProtoinfoTCPState, u8(uint8(e.TCPState)))))...)
	}
	return append(b, nla(ctaID, u32(e.ID))...)
}

const (
	ctaTimeout = 7
)

// create inserts an entry into the kernel table, like conntrack -I.
func create(t *testing.T, tab *Table, e *Entry) {
	t.Helper()
	fam := uint8(unix.AF_INET)
	if e.Orig.Src.Is6() {
		fam = unix.AF_INET6
	}
	req := appendHeader(nil, msgCtNew, unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK, 1, fam)
	req = append(req, tupleAttr(ctaTupleOrig, e.Orig)...)
	req = append(req, tupleAttr(ctaTupleReply, e.Reply)...)
	req = append(req, nla(ctaTimeout, u32(300))...)
	if e.Zone != 0 {
		req = append(req, nla(ctaZone, u16(e.Zone))...)
	}
	if e.Orig.Proto == 6 {
		req = append(req, nested(ctaProtoinfo, nested(ctaProtoinfoTCP, nla(ctaProtoinfoTCPState, u8(uint8(TCPEstablished)))))...)
	}
	putLen(req)
	tab.mu.Lock()
	defer tab.mu.Unlock()
	if err := unix.Sendto(tab.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatalf("create %v: %v", e, err)
	}
	b, err := tab.recv()
	if err != nil {
		t.Fatalf("create %v: %v", e, err)
	}
	if _, typ, _, _ := msgHeader(b); typ != unix.NLMSG_ERROR {
		t.Fatalf("create %v: answer of type %d", e, typ)
	}
	if errno := ackErrno(b[nlmsgHdrLen:]); errno != 0 {
		t.Fatalf("create %v: %v", e, errno)
	}
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
	return Tuple{Src: mustAddr(src), Dst: mustAddr(dst), Proto: 6, SrcPort: sport, DstPort: dport}
}

func udp(src, dst string, sport, dport uint16) Tuple {
	return Tuple{Src: mustAddr(src), Dst: mustAddr(dst), Proto: 17, SrcPort: sport, DstPort: dport}
}

func icmp(src, dst string, id uint16) Tuple {
	a := mustAddr(src)
	if a.Is6() {
		return Tuple{Src: a, Dst: mustAddr(dst), Proto: 58, ICMPType: 128, ICMPID: id}
	}
	return Tuple{Src: a, Dst: mustAddr(dst), Proto: 1, ICMPType: 8, ICMPID: id}
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
