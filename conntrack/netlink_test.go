package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

// parseEntry reads what ctnetlink writes: both tuples of every protocol shape, NAT, zone,
// id, status and mark; and it keeps the raw attributes Delete sends back.
func TestParseEntry(t *testing.T) {
	for _, want := range []*Entry{
		entry(tcp("10.244.1.2", "10.244.1.3", 40000, 80)),
		entry(udp("fd00:10:244:1::2", "fd00:10:244:1::3", 40001, 53)),
		entry(icmp("10.244.1.2", "10.244.1.3", 7)),
		entry(icmp("fd00:10:244:1::2", "fd00:10:244:1::3", 8)),
		dnat(tcp("10.244.1.2", "10.96.0.10", 40002, 80), "10.244.2.7", 8080),
		func() *Entry { e := entry(tcp("10.244.1.2", "10.244.1.3", 40003, 443)); e.Zone = 5; return e }(),
	} {
		t.Run(want.String(), func(t *testing.T) {
			want.Status, want.Mark, want.ID = StatusConfirmed|StatusAssured|StatusSeenReply, 0x42, 0xdeadbeef
			if want.Orig.Proto == 6 {
				want.TCPState = TCPFinWait
			}
			msg := entryMessage(want).Data
			var got Entry
			if err := parseEntry(msg, &got); err != nil {
				t.Fatal(err)
			}
			if got.Family != want.Family || got.Orig != want.Orig || got.Reply != want.Reply ||
				got.Zone != want.Zone || got.ID != want.ID || got.Status != want.Status || got.Mark != want.Mark ||
				got.TCPState != want.TCPState {
				t.Errorf("parsed\n %+v\nwant\n %+v", got, *want)
			}
			if !slices.Equal(got.orig, tuplePayload(want.Orig)) {
				t.Errorf("raw original tuple %x, want %x", got.orig, tuplePayload(want.Orig))
			}
			c := got.Clone()
			clear(msg) // the clone must not alias the buffer
			if c.Orig != want.Orig || !slices.Equal(c.orig, tuplePayload(want.Orig)) {
				t.Errorf("clone aliases the receive buffer: %+v", c)
			}
		})
	}
}

// Broken messages are errors, never panics or entries without a tuple (whose delete
// would flush the table).
func TestParseEntryRejects(t *testing.T) {
	want := entry(tcp("10.0.0.1", "10.0.0.2", 1, 2))
	good := entryMessage(want).Data
	for i := range len(good) {
		var e Entry
		if err := parseEntry(good[:i], &e); err == nil {
			// A cut that falls between attributes leaves a valid shorter entry; it must
			// still have its whole original tuple.
			if !slices.Equal(e.orig, tuplePayload(want.Orig)) || e.Orig != want.Orig {
				t.Errorf("cut at %d: tuple %v %x", i, e.Orig, e.orig)
			}
		}
	}
	var e Entry
	if err := parseEntry([]byte{unix.AF_INET, 0, 0, 0}, &e); err == nil {
		t.Error("entry without a tuple accepted")
	}
	if _, _, err := (&Table{}).Delete([]*Entry{{Family: unix.AF_INET}}); err == nil {
		t.Error("Delete on a closed table succeeded")
	}
}

// Against the kernel, in a throwaway network namespace: Dump lists what was inserted, with
// the kernel's ids; Delete removes exactly the entries given, only while their id matches.
func TestTableKernel(t *testing.T) {
	inNetNS(t, func() {
		tab, err := Open()
		if err != nil {
			t.Fatal(err)
		}
		defer tab.Close()
		var made []*Entry
		for i := range 300 { // more than one dump datagram, more than one delete batch
			var e *Entry
			switch i % 5 {
			case 0:
				e = entry(tcp("10.244.1.2", "10.244.1.3", uint16(10000+i), 80))
			case 1:
				e = entry(udp("fd00:10:244:1::2", "fd00:10:244:1::3", uint16(10000+i), 53))
			case 2:
				e = entry(icmp("10.244.1.2", "10.244.1.3", uint16(i)))
			case 3:
				e = dnat(tcp("10.244.1.2", "10.96.0.10", uint16(10000+i), 80), "10.244.2.7", 8080)
			case 4:
				e = entry(tcp("fd00:10:244:1::2", "fd00:10:244:1::3", uint16(10000+i), 443))
				e.Zone = 3
			}
			made = append(made, e)
		}
		if err := create(tab, made...); err != nil {
			t.Fatal(err)
		}
		dump := func() map[string]*Entry {
			t.Helper()
			got := map[string]*Entry{}
			if err := tab.Dump(func(e *Entry) { got[key(e)] = e.Clone() }); err != nil {
				t.Fatal(err)
			}
			return got
		}
		got := dump()
		if len(got) != len(made) {
			t.Fatalf("dump: %d entries, want %d", len(got), len(made))
		}
		for _, e := range made {
			g := got[key(e)]
			if g == nil {
				t.Fatalf("dump lacks %v", e)
			}
			if e.Orig.Proto == 6 && g.TCPState != TCPEstablished {
				t.Errorf("dump: %v: TCP state %d, want established", e, g.TCPState)
			}
			if g.Reply != e.Reply || g.Zone != e.Zone || g.ID == 0 {
				t.Errorf("dump: %v: reply %v zone %d id %d, want reply %v zone %d", e, g.Reply, g.Zone, g.ID, e.Reply, e.Zone)
			}
		}

		// Delete every other entry, by what Dump returned.
		var del []*Entry
		for i, e := range made {
			if i%2 == 0 {
				del = append(del, got[key(e)])
			}
		}
		deleted, gone, err := tab.Delete(del)
		if err != nil || deleted != len(del) || gone != 0 {
			t.Fatalf("Delete: %d deleted, %d gone, %v; want %d, 0, nil", deleted, gone, err, len(del))
		}
		left := dump()
		for i, e := range made {
			if _, ok := left[key(e)]; ok != (i%2 == 1) {
				t.Errorf("after Delete: %v present = %v", e, ok)
			}
			if e.Zone != 0 {
				continue // Get looks in zone 0
			}
			g, err := tab.Get(e.Orig)
			if err != nil {
				t.Fatalf("Get %v: %v", e, err)
			}
			if (g != nil) != (i%2 == 1) || (g != nil && (g.Reply != e.Reply || g.ID != got[key(e)].ID)) {
				t.Errorf("Get %v = %+v, want present = %v", e, g, i%2 == 1)
			}
		}
		// Deleting them again: all gone, no error.
		if deleted, gone, err := tab.Delete(del); err != nil || deleted != 0 || gone != len(del) {
			t.Errorf("Delete again: %d deleted, %d gone, %v; want 0, %d, nil", deleted, gone, err, len(del))
		}
		// Mark sets its bits and keeps the others; the deleted entries are gone.
		var kept []*Entry
		for _, e := range left {
			kept = append(kept, e)
		}
		for _, m := range []uint32{0x1, 0x10000000} {
			if marked, gone, err := tab.Mark(slices.Concat(kept, del), m); err != nil || marked != len(kept) || gone != len(del) {
				t.Fatalf("Mark %#x: %d marked, %d gone, %v; want %d, %d, nil", m, marked, gone, err, len(kept), len(del))
			}
		}
		for k, e := range dump() {
			if e.Mark != 0x10000001 {
				t.Errorf("after Mark: %s has mark %#x, want 0x10000001", k, e.Mark)
			}
		}
		// An entry re-created with the same tuple has a new id: a stale delete spares it.
		stale := left[key(made[1])]
		if _, _, err := tab.Delete([]*Entry{stale}); err != nil {
			t.Fatal(err)
		}
		if err := create(tab, made[1]); err != nil {
			t.Fatal(err)
		}
		if deleted, gone, err := tab.Delete([]*Entry{stale}); err != nil || deleted != 0 || gone != 1 {
			t.Errorf("stale Delete: %d deleted, %d gone, %v; want 0, 1, nil", deleted, gone, err)
		}
		if _, ok := dump()[key(made[1])]; !ok {
			t.Error("stale Delete removed the re-created entry")
		}
	})
}

func key(e *Entry) string { return fmt.Sprintf("%d %v %d", e.Family, e.Orig, e.Orig.ICMPID) }

func TestTableClosed(t *testing.T) {
	inNetNS(t, func() {
		tab, err := Open()
		if err != nil {
			t.Fatal(err)
		}
		tab.Close()
		if err := tab.Dump(func(*Entry) {}); err == nil || !strings.Contains(err.Error(), "closed") {
			t.Errorf("Dump after Close: %v", err)
		}
		if err := tab.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// ctFake is ctnetlink in memory, behind nltest. It answers as the kernel does: a dump with
// a multi-part series, a get with the entry flagged NLM_F_MULTI and no NLMSG_DONE, each
// delete with an ack, deleting only the entry with the given original tuple, zone and id.
// Like the kernel's, each answer is a datagram of its own but for the series of a dump: a
// read returns one.
type ctFake struct {
	entries     []*Entry
	interrupted bool              // flag the dump NLM_F_DUMP_INTR
	extra       []netlink.Message // dumped after the entries
	errno       map[uint32]unix.Errno
	datagrams   [][]netlink.Message // the requests received, a datagram each
	fail        error               // the socket's next answer, instead of the kernel's
	queue       [][]netlink.Message // answers not yet read
}

// answer is the nltest.Func: reqs is a datagram sent, or nil for a read.
func (k *ctFake) answer(reqs []netlink.Message) ([]netlink.Message, error) {
	if len(reqs) > 0 {
		k.datagrams = append(k.datagrams, reqs)
		if err := k.fail; err != nil {
			k.fail = nil
			return nil, err
		}
		k.process(reqs)
	}
	if len(k.queue) == 0 {
		return nil, os.ErrDeadlineExceeded // a read with nothing left to read
	}
	next := k.queue[0]
	k.queue = k.queue[1:]
	return next, nil
}

func (k *ctFake) process(reqs []netlink.Message) {
	var series []netlink.Message
	reply := func(req netlink.Message, m netlink.Message, flags netlink.HeaderFlags) {
		m.Header.Sequence, m.Header.Flags = req.Header.Sequence, flags
		if flags&netlink.Multi != 0 && req.Header.Flags&netlink.Dump != 0 {
			series = append(series, m)
			return
		}
		k.queue = append(k.queue, []netlink.Message{m})
	}
	ack := func(req netlink.Message, errno unix.Errno) {
		m, _ := nltest.Error(int(errno), []netlink.Message{req})
		k.queue = append(k.queue, m)
	}
	for _, req := range reqs {
		switch {
		case req.Header.Type == msgCtGet && req.Header.Flags&netlink.Dump != 0:
			flags := netlink.Multi
			if k.interrupted {
				flags |= netlink.DumpInterrupted
			}
			for _, e := range k.entries {
				reply(req, entryMessage(e), flags)
			}
			for _, m := range k.extra {
				reply(req, m, flags)
			}
			reply(req, netlink.Message{Header: netlink.Header{Type: netlink.Done}, Data: make([]byte, 4)}, flags)
			k.queue, series = append(k.queue, series), nil
		case req.Header.Type == msgCtGet:
			i := slices.IndexFunc(k.entries, func(e *Entry) bool {
				return slices.Equal(tuplePayload(e.Orig), attrValue(req, ctaTupleOrig)) && e.Zone == 0
			})
			if i < 0 {
				ack(req, unix.ENOENT)
				continue
			}
			reply(req, entryMessage(k.entries[i]), netlink.Multi)
		case req.Header.Type == msgCtDelete:
			zone, id := attrValue(req, ctaZone), attrValue(req, ctaID)
			i := slices.IndexFunc(k.entries, func(e *Entry) bool {
				return slices.Equal(tuplePayload(e.Orig), attrValue(req, ctaTupleOrig)) &&
					(e.Zone == 0 && zone == nil || len(zone) == 2 && e.Zone == binary.BigEndian.Uint16(zone)) &&
					len(id) == 4 && e.ID == binary.BigEndian.Uint32(id)
			})
			switch {
			case i < 0:
				ack(req, unix.ENOENT)
			case k.errno[k.entries[i].ID] != 0:
				ack(req, k.errno[k.entries[i].ID])
			default:
				k.entries = slices.Delete(k.entries, i, i+1)
				ack(req, 0)
			}
		case req.Header.Type == msgCtNew && req.Header.Flags&netlink.Create == 0:
			// An update, as Mark sends: found by tuple and zone only.
			zone := attrValue(req, ctaZone)
			i := slices.IndexFunc(k.entries, func(e *Entry) bool {
				return slices.Equal(tuplePayload(e.Orig), attrValue(req, ctaTupleOrig)) &&
					(e.Zone == 0 && zone == nil || len(zone) == 2 && e.Zone == binary.BigEndian.Uint16(zone))
			})
			mark, mask := attrValue(req, ctaMark), attrValue(req, ctaMarkMask)
			switch {
			case i < 0:
				ack(req, unix.ENOENT)
			case len(mark) != 4 || len(mask) != 4:
				ack(req, unix.EINVAL)
			default:
				e := k.entries[i]
				e.Mark = e.Mark&^binary.BigEndian.Uint32(mask) ^ binary.BigEndian.Uint32(mark)
				ack(req, 0)
			}
		default:
			ack(req, unix.EOPNOTSUPP)
		}
	}
}

// attrValue returns the value of the top-level attribute typ of a ctnetlink request.
func attrValue(req netlink.Message, typ uint16) []byte {
	ad, err := netlink.NewAttributeDecoder(req.Data[nfgenLen:])
	if err != nil {
		panic(err)
	}
	for ad.Next() {
		if ad.Type() == typ {
			return ad.Bytes()
		}
	}
	return nil
}

// fakeEntries returns n entries of every shape, with ids from 1.
func fakeEntries(n int) []*Entry {
	var es []*Entry
	for i := range n {
		var e *Entry
		switch i % 5 {
		case 0:
			e = entry(tcp("10.244.1.2", "10.244.1.3", uint16(10000+i), 80))
			e.TCPState = TCPEstablished
		case 1:
			e = entry(udp("fd00:10:244:1::2", "fd00:10:244:1::3", uint16(10000+i), 53))
		case 2:
			e = entry(icmp("10.244.1.2", "10.244.1.3", uint16(i)))
		case 3:
			e = dnat(tcp("10.244.1.2", "10.96.0.10", uint16(10000+i), 80), "10.244.2.7", 8080)
		case 4:
			e = entry(tcp("fd00:10:244:1::2", "fd00:10:244:1::3", uint16(10000+i), 443))
			e.Zone = 3
		}
		e.ID, e.Status, e.Mark = uint32(1+i), StatusConfirmed, uint32(i)
		es = append(es, e)
	}
	return es
}

func dumpAll(t *testing.T, tab *Table) map[string]*Entry {
	t.Helper()
	got := map[string]*Entry{}
	if err := tab.Dump(func(e *Entry) { got[key(e)] = e.Clone() }); err != nil {
		t.Fatal(err)
	}
	return got
}

// Against ctnetlink's answers (nltest): a dump is one request for both families and
// delivers every entry; deletes go in batches, each request the entry's original tuple as
// dumped, its zone and its id, so that an entry replaced by a new one with the same tuple
// is spared; a get answers one entry or none.
func TestTableFake(t *testing.T) {
	k := &ctFake{entries: fakeEntries(300)}
	tab := &Table{conn: nltest.Dial(k.answer)}
	defer tab.Close()

	got := dumpAll(t, tab)
	if len(k.datagrams) != 1 || len(k.datagrams[0]) != 1 || k.datagrams[0][0].Data[0] != unix.AF_UNSPEC {
		t.Errorf("dump sent %v, want one request for AF_UNSPEC", k.datagrams)
	}
	if len(got) != len(k.entries) {
		t.Fatalf("dump: %d entries, want %d", len(got), len(k.entries))
	}
	for _, e := range k.entries {
		g := got[key(e)]
		if g == nil || g.Orig != e.Orig || g.Reply != e.Reply || g.Zone != e.Zone || g.ID != e.ID ||
			g.Status != e.Status || g.Mark != e.Mark || g.TCPState != e.TCPState || g.Family != e.Family {
			t.Fatalf("dump: %+v, want %+v", g, e)
		}
	}

	// Delete every other entry, by what Dump returned.
	made := slices.Clone(k.entries)
	var del []*Entry
	for i, e := range made {
		if i%2 == 0 {
			del = append(del, got[key(e)])
		}
	}
	k.datagrams = nil
	deleted, gone, err := tab.Delete(del)
	if err != nil || deleted != len(del) || gone != 0 {
		t.Fatalf("Delete: %d deleted, %d gone, %v; want %d, 0, nil", deleted, gone, err, len(del))
	}
	if len(k.datagrams) != 2 || len(k.datagrams[0]) != deleteBatch {
		t.Errorf("Delete sent %d datagrams, want 2 of up to %d requests", len(k.datagrams), deleteBatch)
	}
	for _, d := range k.datagrams {
		for _, req := range d {
			if req.Header.Flags != netlink.Request|netlink.Acknowledge {
				t.Fatalf("delete request flags %v", req.Header.Flags)
			}
		}
	}
	left := dumpAll(t, tab)
	for i, e := range made {
		if _, ok := left[key(e)]; ok != (i%2 == 1) {
			t.Errorf("after Delete: %v present = %v", e, ok)
		}
		if e.Zone != 0 {
			continue // Get looks in zone 0
		}
		g, err := tab.Get(e.Orig)
		if err != nil {
			t.Fatalf("Get %v: %v", e, err)
		}
		if (g != nil) != (i%2 == 1) || (g != nil && g.ID != e.ID) {
			t.Errorf("Get %v = %+v, want present = %v", e, g, i%2 == 1)
		}
	}
	// Deleting them again: all gone, no error.
	if deleted, gone, err := tab.Delete(del); err != nil || deleted != 0 || gone != len(del) {
		t.Errorf("Delete again: %d deleted, %d gone, %v; want 0, %d, nil", deleted, gone, err, len(del))
	}
	// Mark updates the entries left (an update: no NLM_F_CREATE), setting its bit and keeping
	// the others; the deleted ones are gone.
	var kept []*Entry
	for _, e := range left {
		kept = append(kept, e)
	}
	k.datagrams = nil
	if marked, gone, err := tab.Mark(slices.Concat(kept, del), 0x10000000); err != nil || marked != len(kept) || gone != len(del) {
		t.Fatalf("Mark: %d marked, %d gone, %v; want %d, %d, nil", marked, gone, err, len(kept), len(del))
	}
	for _, d := range k.datagrams {
		for _, req := range d {
			if req.Header.Type != msgCtNew || req.Header.Flags != netlink.Request|netlink.Acknowledge {
				t.Fatalf("mark request type %#x flags %v", req.Header.Type, req.Header.Flags)
			}
		}
	}
	for _, e := range k.entries {
		if want := (e.ID - 1) | 0x10000000; e.Mark != want { // fakeEntries: mark i, id 1+i
			t.Errorf("after Mark: %v has mark %#x, want %#x", e, e.Mark, want)
		}
	}
	if _, _, err := tab.Mark(kept, 0); err == nil {
		t.Error("Mark with no bits succeeded")
	}
	// An entry replaced by a new one with the same tuple (a new id) is spared.
	stale := left[key(made[1])]
	renewed := *made[1]
	renewed.ID = 1000
	k.entries[0] = &renewed
	if deleted, gone, err := tab.Delete([]*Entry{stale}); err != nil || deleted != 0 || gone != 1 {
		t.Errorf("stale Delete: %d deleted, %d gone, %v; want 0, 1, nil", deleted, gone, err)
	}
	if k.entries[0] != &renewed {
		t.Error("stale Delete removed the new entry")
	}
}

// What goes wrong is reported, and the rest is still done: every entry of a dump that had
// a broken one or was interrupted is delivered; a delete that fails names its entry and
// the others go ahead; an entry without its tuple is never sent (its delete would flush
// the table); after the socket failed, the next exchange works.
func TestTableFakeErrors(t *testing.T) {
	k := &ctFake{entries: fakeEntries(10)}
	tab := &Table{conn: nltest.Dial(k.answer)}
	defer tab.Close()
	count := func() (n int, err error) {
		err = tab.Dump(func(*Entry) { n++ })
		return n, err
	}

	k.extra = []netlink.Message{{Header: netlink.Header{Type: msgCtNew}, Data: []byte{unix.AF_INET, 0, 0, 0, 8, 0}}}
	if n, err := count(); n != 10 || err == nil {
		t.Errorf("dump with a broken entry: %d entries, %v; want 10 and an error", n, err)
	}
	k.extra, k.interrupted = nil, true
	if n, err := count(); n != 10 || !errors.Is(err, ErrInterrupted) {
		t.Errorf("interrupted dump: %d entries, %v; want 10, ErrInterrupted", n, err)
	}
	k.interrupted = false

	var dumped []*Entry
	if err := tab.Dump(func(e *Entry) { dumped = append(dumped, e.Clone()) }); err != nil {
		t.Fatal(err)
	}
	k.errno = map[uint32]unix.Errno{3: unix.EPERM}
	deleted, gone, err := tab.Delete(dumped[:5])
	if deleted != 4 || gone != 0 || !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), dumped[2].String()) {
		t.Errorf("Delete with one refused: %d deleted, %d gone, %v; want 4, 0, EPERM naming it", deleted, gone, err)
	}

	k.datagrams = nil
	if _, _, err := tab.Delete([]*Entry{entry(tcp("10.0.0.1", "10.0.0.2", 1, 2))}); err == nil || len(k.datagrams) != 0 {
		t.Errorf("Delete of an entry without its dumped tuple: %v, %d datagrams sent", err, len(k.datagrams))
	}

	k.fail = unix.ENOBUFS
	if _, err := count(); !errors.Is(err, unix.ENOBUFS) {
		t.Errorf("dump on a failing socket: %v", err)
	}
	if n, err := count(); n != 6 || err != nil {
		t.Errorf("dump after a socket failure: %d entries, %v; want %d, nil", n, err, len(k.entries))
	}
}
