package nft

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Capabilities is what the kernel's nftables accepted in the probe.
type Capabilities struct {
	// NativeQueue reports whether the nft queue expression (nft_queue) is
	// available.
	NativeQueue bool
	// CompatQueue reports whether the xtables NFQUEUE target revision 3 is
	// available through nft_compat.
	CompatQueue bool
}

var probeSeq atomic.Uint32

// Probe asks the kernel of c's network namespace which queue renderings it
// accepts. Each check is one batch that adds a throwaway table, a regular
// chain and a rule with the expression, and deletes the table again: the
// kernel validates the expression while preparing the transaction, so an
// unsupported expression aborts the whole batch and nothing is left behind;
// a supported one is created and deleted in the same commit. No base chain
// is involved, so no packet ever sees the probe.
func Probe(c *nftables.Conn) (Capabilities, error) {
	native, err := probeExpr(c, &expr.Queue{Num: 0, Total: 1, Flag: expr.QueueFlagBypass})
	if err != nil {
		return Capabilities{}, fmt.Errorf("probe nft queue: %w", err)
	}
	_, compat := queueAction(Config{QueueCount: 1, FailOpen: true}, ModeCompat)
	compatOK, err := probeExpr(c, compat())
	if err != nil {
		return Capabilities{}, fmt.Errorf("probe xt NFQUEUE: %w", err)
	}
	return Capabilities{NativeQueue: native, CompatQueue: compatOK}, nil
}

// probeExpr reports whether the kernel accepts a rule made of e. An error
// that means "no such expression or target" is a false answer; anything
// else (no permission, no nftables at all) is returned.
func probeExpr(c *nftables.Conn, e expr.Any) (bool, error) {
	t := &nftables.Table{
		Name:   fmt.Sprintf("podwall_probe_%d_%d", os.Getpid(), probeSeq.Add(1)),
		Family: nftables.TableFamilyINet,
	}
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{e}})
	c.DelTable(t)
	err := c.Flush()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP):
		return false, nil
	}
	return false, err
}
