package nft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Damage compares the table in the kernel with the one Program installs and describes
// what is wrong with it: "" when nothing is. Someone else may have removed it (`nft flush
// ruleset`, a restart of nftables.service, `nft delete table inet podwall`), emptied its
// chain (`nft flush chain`) or a rule, or made it dormant; then isolation is gone until
// Program (or ProgramSync) restores it. An error means the kernel could not be asked.
//
// Damage reads two small things: the table (one get) and the rules of the chain (one
// dump of about ten rules); it does not read set elements (an element deleted by hand is
// not noticed here; the next Sync, which diffs against the kernel, puts it back). The
// agent calls it every 200 ms; its cost is in bench/README.md ("Table check").
func (r *Ruleset) Damage() (string, error) {
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
	return "", nil
}

// bigEndian returns the big-endian value of a uint32 the library decoded in host order.
func bigEndian(v uint32) uint32 {
	return binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, v))
}
