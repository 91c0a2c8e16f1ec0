package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podwall/podwall/conntrack"
	"github.com/podwall/podwall/datapath/nft"
)

type cleanupOpts struct {
	conntrack bool
	mark      string
}

func newCleanupCmd() *cobra.Command {
	var o cleanupOpts
	cmd := &cobra.Command{
		Use:   "cleanup [--conntrack [--conntrack-mark MARK[/MASK]]]",
		Short: "Remove what the agent left in the kernel (uninstall)",
		Long: `cleanup removes the nftables table inet podwall from the network namespace it runs in:
its chains, sets and rules, so that no pod stays isolated by an agent that is gone. Without a
table it does nothing and succeeds; run it again at will.

Run it after the agents are gone (kubectl delete -k deploy/), on each node, in the node's
network namespace, as root or with CAP_NET_ADMIN: a running agent puts its table back, and
deleting the table drops the packets queued at that moment. README.md ("Uninstall") shows
a one-shot pod per node that does it.

With --conntrack it also deletes the conntrack entries carrying podwall's connection mark
(--conntrack-mark, MARK or MARK/MASK; by default the agent's --revoke-mark default): the
connections the agent revoked. Without the table nothing drops their packets any more;
deleting their entries leaves no mark behind for whatever uses the bit next.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.OutOrStdout()) },
	}
	f := cmd.Flags()
	f.BoolVar(&o.conntrack, "conntrack", false, "also delete the conntrack entries carrying podwall's mark")
	f.StringVar(&o.mark, "conntrack-mark", fmt.Sprintf("%#x", conntrack.DefaultMark),
		"the connection mark the agent sets on revoked connections (its --revoke-mark), MARK or MARK/MASK")
	return cmd
}

func (o *cleanupOpts) run(out io.Writer) error {
	var mark, mask uint32
	if o.conntrack && o.mark != "" {
		var err error
		if mark, mask, err = parseMark(o.mark); err != nil {
			return err
		}
	}
	removed, err := nft.Remove(0)
	if err != nil {
		return err
	}
	if removed {
		fmt.Fprintf(out, "removed table inet %s\n", nft.TableName)
	} else {
		fmt.Fprintf(out, "no table inet %s: nothing to remove\n", nft.TableName)
	}
	if !o.conntrack {
		return nil
	}
	if mask == 0 {
		fmt.Fprintln(out, "conntrack: no --conntrack-mark: nothing to delete")
		return nil
	}
	tab, err := conntrack.Open()
	if err != nil {
		return err
	}
	defer tab.Close()
	n, err := tab.DeleteMarked(mark, mask)
	fmt.Fprintf(out, "conntrack: deleted %d entries marked %#x/%#x\n", n, mark, mask)
	return err
}

// parseMark reads MARK or MARK/MASK (decimal, or 0x hexadecimal); the mask defaults to
// the mark's bits.
func parseMark(s string) (mark, mask uint32, err error) {
	m, k, hasMask := strings.Cut(s, "/")
	mv, err1 := strconv.ParseUint(m, 0, 32)
	kv := mv
	var err2 error
	if hasMask {
		kv, err2 = strconv.ParseUint(k, 0, 32)
	}
	if err1 != nil || err2 != nil || mv == 0 || kv == 0 || mv&^kv != 0 {
		return 0, 0, fmt.Errorf("--conntrack-mark %q: want MARK or MARK/MASK, non-zero, the mark within the mask (e.g. 0x100/0x100)", s)
	}
	return uint32(mv), uint32(kv), nil
}
