package policy

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The peer walk of ruleSet.lowest has three ways through (lists of similar sizes walked
// together, the shorter list sought in the longer either way) and stops early; all must
// find the lowest rank of the peers common to the pod and the set, against a plain double
// loop, for lists of every proportion.
func TestRuleSetPeerWalk(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	randomIDs := func(n, space int) []uint32 {
		seen := map[uint32]bool{}
		var ids []uint32
		for len(ids) < n {
			if id := uint32(r.IntN(space)); !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		return ids
	}
	sizes := []int{0, 1, 2, 3, 5, 12, 40, 100, 300}
	for range 20 {
		for _, np := range sizes {
			for _, ns := range sizes {
				space := 2 * max(np, ns, 4)
				s := ruleSet{min: 0, any: noRank, peerIDs: randomIDs(ns, space)}
				for range s.peerIDs {
					s.peerRanks = append(s.peerRanks, uint32(r.IntN(50)))
				}
				s.peerRest = make([]uint32, len(s.peerRanks))
				rest := noRank
				for i := len(s.peerRanks) - 1; i >= 0; i-- {
					rest = min(rest, s.peerRanks[i])
					s.peerRest[i] = rest
				}
				pod := &podEntry{peers: randomIDs(np, space)}
				best := []uint32{noRank, 10, 30}[r.IntN(3)]

				want := best
				for i, id := range s.peerIDs {
					if slices.Contains(pod.peers, id) {
						want = min(want, s.peerRanks[i])
					}
				}
				if got := s.lowest(best, pod, mustAddr("192.0.2.1")); got != want {
					t.Fatalf("pod peers %v, set peers %v ranks %v, best %d: got %d, want %d",
						pod.peers, s.peerIDs, s.peerRanks, best, got, want)
				}
			}
		}
	}
}
