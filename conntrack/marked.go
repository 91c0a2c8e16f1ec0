package conntrack

import (
	"errors"
	"fmt"
)

// DeleteMarked deletes every entry whose connection mark, masked with mask, equals mark (mark
// has no bit outside mask): the connections podwall marked, for `podwall cleanup --conntrack`.
// A zero mask or mark is refused, since it would select every unmarked connection of the
// node. It returns how many entries it deleted; entries that vanished meanwhile are not
// errors.
func (t *Table) DeleteMarked(mark, mask uint32) (int, error) {
	if mask == 0 || mark == 0 || mark&^mask != 0 {
		return 0, fmt.Errorf("conntrack: mark %#x/%#x: want a non-zero mark within a non-zero mask", mark, mask)
	}
	var marked []*Entry
	derr := t.Dump(func(e *Entry) {
		if e.Mark&mask == mark {
			marked = append(marked, e.Clone())
		}
	})
	if derr != nil && !errors.Is(derr, ErrInterrupted) {
		return 0, derr
	}
	deleted, _, err := t.Delete(marked)
	// An interrupted dump may have missed entries: say so, after deleting what it found.
	return deleted, errors.Join(err, derr)
}
