package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Damage compares the table in the kernel with the one Program installs and describes
// what is wrong with it: "" when nothing is. Someone else may have removed it (`nft flush
// ruleset`, a restart of nftables.service, `nft delete table inet podwall`), emptied its
// chain (`nft flush chain`) or a rule, or made it dormant; with elements, also emptied an
// address set or changed its elements by hand (`nft flush set`, `nft delete element`).
// Then isolation is gone until ProgramSync restores it. An error means the kernel could
// not be asked.
//
// Damage reads two small things: the table (one get) and the rules of the chain (one dump
// of about ten rules); with elements, also the four address sets (local pods only: a few
// hundred elements at most), compared with what the last Sync or ProgramSync put in them.
// The agent calls it every 200 ms, with elements once a second; its cost is in
// bench/README.md ("Table check").
func (r *Ruleset) Damage(elements bool) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return "", ErrClosed
	}
	t, err := r.conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return fmt.Sprintf("table inet %s is gone", TableName), nil
	}
	if err != nil {
		return "", fmt.Errorf("nft: get table inet %s: %w", TableName, err)
	}
	// google/nftables v0.3.0 reads the table's attributes in host byte order; the kernel
	// writes them big-endian.
	flags, use := bigEndian(t.Flags), bigEndian(t.Use)
	if flags&unix.NFT_TABLE_F_DORMANT != 0 {
		return fmt.Sprintf("table inet %s is dormant", TableName), nil
	}
	if use == 0 { // the table's chain count
		return fmt.Sprintf("chain %s is gone", ChainName), nil
	}
	if r.want == nil {
		rs := build(r.cfg, r.mode)
		r.want = &rs
	}
	rules, err := r.conn.GetRules(r.want.table, r.want.chain)
	if err != nil {
		return "", fmt.Errorf("nft: read rules: %w", err)
	}
	if len(rules) != len(r.want.rules) {
		return fmt.Sprintf("chain %s has %d rules, want %d", ChainName, len(rules), len(r.want.rules)), nil
	}
	if d, err := r.nodeDamage(); d != "" || err != nil {
		return d, err
	}
	if !elements || !r.synced {
		return "", nil
	}
	for _, s := range r.want.sets {
		want, ok := r.elems[s.Name]
		if !ok || !slices.Contains(isolationSets, s.Name) {
			continue // filled by someone else than Sync
		}
		df, err := r.diff(s, want, true)
		if err != nil {
			return "", err
		}
		if len(df.add) > 0 || len(df.del) > 0 {
			return fmt.Sprintf("set %s lacks %d addresses and holds %d others", s.Name, len(df.add), len(df.del)), nil
		}
	}
	return "", nil
}

// isolationSets are the sets Damage compares with what Sync put in them: the isolated pods,
// and the pods judged with their own node (when SyncWindow filled those).
var isolationSets = []string{SetIngress4, SetIngress6, SetEgress4, SetEgress6,
	SetNodeIngress4, SetNodeIngress6, SetNodeEgress4, SetNodeEgress6}

// bigEndian returns the big-endian value of a uint32 the library decoded in host order.
func bigEndian(v uint32) uint32 {
	return binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, v))
}
