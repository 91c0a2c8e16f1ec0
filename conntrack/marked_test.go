package conntrack

import (
	"testing"
)

// Against the kernel, in a throwaway namespace: DeleteMarked deletes exactly the entries
// carrying the mark under the mask, and nothing when none does; a mark that would select
// unmarked entries is refused.
func TestDeleteMarkedKernel(t *testing.T) {
	inNetNS(t, func() {
		tab, err := Open()
		if err != nil {
			t.Fatal(err)
		}
		defer tab.Close()
		var made []*Entry
		for i := range 40 {
			e := entry(tcp("10.244.1.2", "10.244.1.3", uint16(20000+i), 80))
			switch i % 4 {
			case 0:
				e.Mark = 0x100 // podwall's bit
			case 1:
				e.Mark = 0x100 | 0x7 // podwall's bit and someone else's
			case 2:
				e.Mark = 0x7 // someone else's only
			}
			made = append(made, e)
		}
		if err := create(tab, made...); err != nil {
			t.Fatal(err)
		}
		for _, bad := range [][2]uint32{{0, 0}, {0, 0x100}, {0x100, 0}, {0x300, 0x100}} {
			if _, err := tab.DeleteMarked(bad[0], bad[1]); err == nil {
				t.Errorf("DeleteMarked(%#x, %#x) accepted", bad[0], bad[1])
			}
		}
		n, err := tab.DeleteMarked(0x100, 0x100)
		if err != nil || n != 20 {
			t.Fatalf("DeleteMarked: %d deleted, %v; want 20", n, err)
		}
		left := map[uint32]int{}
		if err := tab.Dump(func(e *Entry) { left[e.Mark]++ }); err != nil {
			t.Fatal(err)
		}
		if len(left) != 2 || left[0x7] != 10 || left[0] != 10 {
			t.Errorf("entries left by mark: %v, want 10 with 0x7 and 10 unmarked", left)
		}
		if n, err := tab.DeleteMarked(0x100, 0x100); err != nil || n != 0 {
			t.Errorf("again: %d deleted, %v; want none", n, err)
		}
	})
}
