package nft

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Render returns a deterministic text of the ruleset that Program installs
// for cfg with the queue rendered in mode (ModeNative or ModeCompat; ModeAuto
// is an error because it depends on the kernel; cfg.Mode is ignored). It is what the golden tests
// compare: for each rule its nft text, then one line per expression in the
// style of libnftnl's debug output, so a change of the kernel contract — an
// offset, a flag, a register — shows up as a diff.
func Render(cfg Config, mode QueueMode) ([]byte, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if mode != ModeNative && mode != ModeCompat {
		return nil, fmt.Errorf("nft: render needs mode native or compat, got %v", mode)
	}
	rs := build(cfg, mode)
	node := buildNode(rs.table, cfg, mode)

	var b bytes.Buffer
	failure := "fail-closed"
	if cfg.FailOpen {
		failure = "fail-open"
	}
	fmt.Fprintf(&b, "# podwall ruleset: queue %s, %s\n", mode, failure)
	fmt.Fprintf(&b, "table inet %s\n", rs.table.Name)
	for _, s := range slices.Concat(rs.sets, rs.caches, rs.window, node.sets, node.windows) {
		fmt.Fprintf(&b, "set %s type %s", s.Name, s.KeyType.Name)
		if s.Interval {
			b.WriteString(" flags interval")
		}
		if s.Concatenation {
			fmt.Fprintf(&b, " (concatenation, %d bytes)", s.KeyType.Bytes)
		}
		if s.Size > 0 {
			fmt.Fprintf(&b, " size %d", s.Size)
		}
		if s.HasTimeout {
			fmt.Fprintf(&b, " flags timeout timeout %dms", s.Timeout.Milliseconds())
		}
		b.WriteByte('\n')
	}
	for i, cr := range append([]chainRules{{rs.chain, rs.rules}}, node.chains...) {
		c := cr.chain
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "chain %s type %s hook %s priority %d policy accept\n", c.Name, c.Type, hookName(*c.Hooknum), *c.Priority)
		for _, r := range cr.rules {
			fmt.Fprintf(&b, "\nrule %s: %s\n", c.Name, r.text)
			for _, e := range r.exprs {
				fmt.Fprintf(&b, "  [ %s ]\n", exprString(e))
			}
		}
	}
	return b.Bytes(), nil
}

// hookName names the hooks of podwall's base chains.
func hookName(h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookOutput:
		return "output"
	}
	return fmt.Sprintf("hook%d", h)
}

// exprString formats the expressions this package uses; anything else falls
// back to Go syntax so that an unexpected expression still shows in a diff.
func exprString(e expr.Any) string {
	switch e := e.(type) {
	case *expr.Ct:
		return fmt.Sprintf("ct load %s => reg %d", ctKey(e.Key), e.Register)
	case *expr.Bitwise:
		return fmt.Sprintf("bitwise reg %d = ( reg %d & %s ) ^ %s", e.DestRegister, e.SourceRegister, hexData(e.Mask), hexData(e.Xor))
	case *expr.Cmp:
		return fmt.Sprintf("cmp %s reg %d %s", cmpOp(e.Op), e.Register, hexData(e.Data))
	case *expr.Range:
		return fmt.Sprintf("range %s reg %d %s %s", cmpOp(e.Op), e.Register, hexData(e.FromData), hexData(e.ToData))
	case *expr.Meta:
		return fmt.Sprintf("meta load %s => reg %d", metaKey(e.Key), e.Register)
	case *expr.Payload:
		base := map[expr.PayloadBase]string{
			expr.PayloadBaseLLHeader:        "link",
			expr.PayloadBaseNetworkHeader:   "network",
			expr.PayloadBaseTransportHeader: "transport",
		}[e.Base]
		return fmt.Sprintf("payload load %db @ %s header + %d => reg %d", e.Len, base, e.Offset, e.DestRegister)
	case *expr.Lookup:
		s := fmt.Sprintf("lookup reg %d set %s", e.SourceRegister, e.SetName)
		if e.Invert {
			s += " invert"
		}
		return s
	case *expr.Fib:
		var flags []string
		for _, f := range []struct {
			on   bool
			name string
		}{{e.FlagSADDR, "saddr"}, {e.FlagDADDR, "daddr"}, {e.FlagMARK, "mark"}, {e.FlagIIF, "iif"}, {e.FlagOIF, "oif"}} {
			if f.on {
				flags = append(flags, f.name)
			}
		}
		result := "?"
		switch {
		case e.ResultOIF:
			result = "oif"
		case e.ResultOIFNAME:
			result = "oifname"
		case e.ResultADDRTYPE:
			result = "type"
		}
		if e.FlagPRESENT {
			result += " present"
		}
		return fmt.Sprintf("fib %s %s => reg %d", strings.Join(flags, " . "), result, e.Register)
	case *expr.Counter:
		return "counter"
	case *expr.Queue:
		total := e.Total
		if total == 0 {
			total = 1
		}
		return fmt.Sprintf("queue num %d total %d flags 0x%x", e.Num, total, uint16(e.Flag))
	case *expr.Target:
		info, err := xt.Marshal(xt.TableFamily(unix.NFPROTO_INET), e.Rev, e.Info)
		if err != nil {
			return fmt.Sprintf("target name %s rev %d info <%v>", e.Name, e.Rev, err)
		}
		return fmt.Sprintf("target name %s rev %d info %s", e.Name, e.Rev, hex.EncodeToString(info))
	case *expr.Verdict:
		return "immediate reg 0 " + verdict(e)
	}
	return fmt.Sprintf("%#v", e)
}

func ctKey(k expr.CtKey) string {
	switch k {
	case expr.CtKeySTATE:
		return "state"
	case expr.CtKeyMARK:
		return "mark"
	}
	return fmt.Sprintf("key %d", k)
}

func metaKey(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyIIFNAME:
		return "iifname"
	case expr.MetaKeyNFPROTO:
		return "nfproto"
	case expr.MetaKeyL4PROTO:
		return "l4proto"
	case expr.MetaKeyIIF:
		return "iif"
	case expr.MetaKeyOIF:
		return "oif"
	}
	return fmt.Sprintf("key %d", k)
}

func cmpOp(op expr.CmpOp) string {
	switch op {
	case expr.CmpOpEq:
		return "eq"
	case expr.CmpOpNeq:
		return "neq"
	case expr.CmpOpLt:
		return "lt"
	case expr.CmpOpLte:
		return "lte"
	case expr.CmpOpGt:
		return "gt"
	case expr.CmpOpGte:
		return "gte"
	}
	return fmt.Sprintf("op%d", op)
}

func verdict(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}

// hexData prints register data as bytes in memory order, with the text
// alongside when every byte is printable (interface names).
func hexData(b []byte) string {
	s := "0x" + hex.EncodeToString(b)
	printable := len(b) > 0
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			printable = false
			break
		}
	}
	if printable {
		s += fmt.Sprintf(" %q", string(b))
	}
	return s
}
