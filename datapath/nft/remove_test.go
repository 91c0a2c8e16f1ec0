package nft

import (
	"strings"
	"testing"
)

// Remove (podwall cleanup) deletes a programmed table, sets and all, and leaves the rest of
// the ruleset alone; a second Remove, with no table, is a no-op that succeeds.
func TestLiveRemove(t *testing.T) {
	requireRoot(t)
	requireNft(t)
	r, ns, h := newLab(t, Config{QueueCount: 1})
	if err := r.ProgramSync(1, addrs("10.244.1.2"), addrs("fd00:10:244:1::2")); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(true); err != nil { // the agent stopped, fail closed: the table stays
		t.Fatal(err)
	}
	if _, err := nftIn(ns, "add", "table", "inet", "other"); err != nil {
		t.Fatal(err)
	}
	if out := listTable(t, ns); !strings.Contains(out, "10.244.1.2") {
		t.Fatalf("programmed table lacks its element:\n%s", out)
	}

	removed, err := Remove(int(h))
	if err != nil || !removed {
		t.Fatalf("Remove: removed %v, %v", removed, err)
	}
	out, err := nftIn(ns, "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "table inet "+TableName) || !strings.Contains(out, "table inet other") {
		t.Errorf("ruleset after Remove:\n%s", out)
	}

	removed, err = Remove(int(h))
	if err != nil || removed {
		t.Errorf("Remove again: removed %v, %v; want nothing, no error", removed, err)
	}
}
