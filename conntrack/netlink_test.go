package conntrack

import (
	"fmt"
	"slices"
	"strings"
	"testing"

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
			msg := append([]byte{want.Family, unix.NFNETLINK_V0, 0, 0}, entryAttrs(want)...)
			var got Entry
			if err := parseEntry(msg, &got); err != nil {
				t.Fatal(err)
			}
			if got.Family != want.Family || got.Orig != want.Orig || got.Reply != want.Reply ||
				got.Zone != want.Zone || got.ID != want.ID || got.Status != want.Status || got.Mark != want.Mark ||
				got.TCPState != want.TCPState {
				t.Errorf("parsed\n %+v\nwant\n %+v", got, *want)
			}
			if !slices.Equal(got.origAttr, tupleAttr(ctaTupleOrig, want.Orig)) {
				t.Errorf("raw original tuple %x, want %x", got.origAttr, tupleAttr(ctaTupleOrig, want.Orig))
			}
			if (want.Zone != 0) != (got.zoneAttr != nil) {
				t.Errorf("zone attribute %x for zone %d", got.zoneAttr, want.Zone)
			}
			c := got.Clone()
			clear(msg) // the clone must not alias the buffer
			if c.Orig != want.Orig || !slices.Equal(c.origAttr, tupleAttr(ctaTupleOrig, want.Orig)) ||
				!slices.Equal(c.idAttr, nla(ctaID, u32(want.ID))) {
				t.Errorf("clone aliases the receive buffer: %+v", c)
			}
		})
	}
}

// Broken messages are errors, never panics or entries without a tuple (whose delete
// would flush the table).
func TestParseEntryRejects(t *testing.T) {
	good := append([]byte{unix.AF_INET, 0, 0, 0}, entryAttrs(entry(tcp("10.0.0.1", "10.0.0.2", 1, 2)))...)
	for i := range len(good) {
		var e Entry
		if err := parseEntry(good[:i], &e); err == nil && e.origAttr != nil && i < len(good) {
			// A cut that falls between attributes leaves a valid shorter entry; it must
			// still have its whole original tuple.
			if !slices.Equal(e.origAttr, tupleAttr(ctaTupleOrig, e.Orig)) {
				t.Errorf("cut at %d: tuple %x", i, e.origAttr)
			}
		}
	}
	var e Entry
	if err := parseEntry([]byte{unix.AF_INET, 0, 0, 0}, &e); err == nil {
		t.Error("entry without a tuple accepted")
	}
	if _, _, err := (&Table{fd: -1}).Delete([]*Entry{{Family: unix.AF_INET}}); err == nil {
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
			create(t, tab, e)
			made = append(made, e)
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
		// An entry re-created with the same tuple has a new id: a stale delete spares it.
		stale := left[key(made[1])]
		if _, _, err := tab.Delete([]*Entry{stale}); err != nil {
			t.Fatal(err)
		}
		create(t, tab, made[1])
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
