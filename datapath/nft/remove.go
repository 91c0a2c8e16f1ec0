package nft

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Remove deletes the `inet podwall` table, with its chains, sets and rules, from the network
// namespace netns (an open file descriptor; 0 for the calling thread's), and reports whether
// there was one. A missing table is not an error: uninstall may run twice, or on a node the
// agent never programmed. It needs no probe of the kernel's queue support, so it works where
// the agent could not start. Run it only once no agent serves the table: deleting the hooked
// table drops every packet queued at that moment, and a running agent puts the table back.
func Remove(netns int) (removed bool, err error) {
	var opts []nftables.ConnOption
	if netns > 0 {
		opts = append(opts, nftables.WithNetNSFd(netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return false, fmt.Errorf("nft: open netlink: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("nft: list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }) {
		return false, nil
	}
	c.DelTable(newTable())
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) { // removed meanwhile
			return false, nil
		}
		return false, fmt.Errorf("nft: delete table inet %s: %w", TableName, err)
	}
	return true, nil
}
