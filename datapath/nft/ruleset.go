package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/policy/flow"
)

// ErrClosed is returned by the methods of a closed Ruleset.
var ErrClosed = errors.New("nft: ruleset closed")

// ErrStale is returned by AddDenied and AddAllowed for verdicts of a policy generation other
// than the one the last Sync (or ProgramSync) installed: the policy they came from is no
// longer the one the kernel sets enforce, so they must not enter a verdict cache.
var ErrStale = errors.New("nft: verdict cache: verdicts of a policy generation no longer in force")

// maxElemsPerMsg bounds the elements in one netlink message of a set
// update, so that a large Sync stays well inside the socket's send buffer.
// All messages still go out in one batch: one transaction.
const maxElemsPerMsg = 512

// maxCachedPerBatch bounds the elements of one AddDenied or AddAllowed
// transaction: a batch goes out in one sendmsg, which the socket's send buffer
// bounds (a whole cache at once is "message too long"). 2,048 IPv6 elements
// are about 100 KiB. The caches need no all-or-nothing addition, so a large
// addition is several transactions.
const maxCachedPerBatch = 2048

// Ruleset owns podwall's table in one network namespace. Its methods are
// safe for concurrent use.
type Ruleset struct {
	cfg  Config
	mode QueueMode
	caps Capabilities

	mu     sync.Mutex // serialises batches on conn, and guards what follows
	conn   *nftables.Conn
	closed bool
	// gen is the policy generation that the last Sync or ProgramSync installed, valid
	// when synced. The deny cache holds verdicts of gen only: Sync empties it when the
	// generation changes, and AddDenied refuses any other generation's verdicts.
	gen    uint64
	synced bool
	// ranges are what the interval sets of rangePairs hold (Window.ranges), valid when
	// rangesSynced.
	ranges       [3][]netip.Prefix
	rangesSynced bool
	// want is the ruleset Program installs, built by the first Damage.
	want *ruleset
	// elems is what the last Sync or ProgramSync put in the address sets (set name →
	// addresses), valid when synced: what Damage compares the kernel's sets with.
	elems map[string]map[netip.Addr]bool
}

// New validates cfg, opens a lasting nftables netlink connection in the
// calling thread's network namespace (or Config.NetNS), and
// probes the kernel's queue support. With ModeAuto the native queue
// expression is used when the kernel has it, otherwise the xt NFQUEUE target;
// an explicitly requested mode the kernel lacks is an error. New does not
// change the ruleset: call Program.
func New(cfg Config) (*Ruleset, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	connOpts := []nftables.ConnOption{nftables.AsLasting()}
	if cfg.NetNS > 0 {
		connOpts = append(connOpts, nftables.WithNetNSFd(cfg.NetNS))
	}
	conn, err := nftables.New(connOpts...)
	if err != nil {
		return nil, fmt.Errorf("nft: open netlink: %w", err)
	}
	r := &Ruleset{cfg: cfg, conn: conn}
	if r.caps, err = Probe(conn); err != nil {
		_ = conn.CloseLasting()
		return nil, fmt.Errorf("nft: %w", err)
	}
	switch {
	case cfg.Mode == ModeNative && !r.caps.NativeQueue:
		err = errors.New("nft: kernel has no nft queue expression (CONFIG_NFT_QUEUE)")
	case cfg.Mode == ModeCompat && !r.caps.CompatQueue:
		err = errors.New("nft: kernel has no xt NFQUEUE target through nft_compat")
	case cfg.Mode == ModeAuto && r.caps.NativeQueue:
		r.mode = ModeNative
	case cfg.Mode == ModeAuto && r.caps.CompatQueue:
		r.mode = ModeCompat
	case cfg.Mode == ModeAuto:
		err = errors.New("nft: kernel has neither the nft queue expression nor the xt NFQUEUE target")
	default:
		r.mode = cfg.Mode
	}
	if err != nil {
		_ = conn.CloseLasting()
		return nil, err
	}
	return r, nil
}

// Mode returns the queue rendering in use: ModeNative or ModeCompat.
func (r *Ruleset) Mode() QueueMode { return r.mode }

// Capabilities returns what the probe in New found.
func (r *Ruleset) Capabilities() Capabilities { return r.caps }

// Program makes the table, its sets, the base chain and its rules exactly
// what cfg describes, in one transaction. It is idempotent, and it takes
// over a table left by an earlier (possibly crashed) run without deleting it:
// the base chain is flushed and refilled in the same batch, so the hook
// never disappears and no packet sees a half-built chain, and packets
// queued to userspace stay queued (unhooking would make the kernel drop
// them).
//
// Set elements found in a matching set are kept: isolated pods stay
// isolated from the moment the table is taken over, and the first Sync
// reconciles the elements (ProgramSync does both in one transaction). The
// deny cache is the exception: it is emptied, since its verdicts came from a
// policy this Ruleset has not synced (AddDenied refuses everything until
// the first Sync). Leftovers that do not match the wanted layout
// are removed in the same batch: unknown chains, sets of another name or
// type; other object kinds (podwall creates none) are left alone. Only a
// base chain with another hook, type or priority (a layout change between
// versions) is deleted and re-created in the batch, which unhooks it once.
func (r *Ruleset) Program() error {
	return r.program(nil, 0, nil)
}

// ProgramSync is Program and Sync(gen, ingress, egress) in one transaction:
// the table, chain and rules appear (or are taken over) already holding the
// given set elements, so there is no moment, not even between two
// transactions, in which the hook runs with sets that do not match the
// policy. The agent starts with it.
func (r *Ruleset) ProgramSync(gen uint64, ingress, egress []netip.Addr) error {
	want, err := wantElements(ingress, egress)
	if err != nil {
		return err
	}
	return r.program(want, gen, nil)
}

// ProgramSyncWindow is ProgramSync that also fills the new-pod window's sets with w, in
// the same transaction. The agent starts with it.
func (r *Ruleset) ProgramSyncWindow(gen uint64, ingress, egress []netip.Addr, w Window) error {
	want, err := wantElements(ingress, egress)
	if err != nil {
		return err
	}
	if err := wantLocal(want, w.Local); err != nil {
		return err
	}
	if err := wantNode(want, w.NodeIngress, w.NodeEgress); err != nil {
		return err
	}
	return r.program(want, gen, &w)
}

// program is Program; with elems (set name → addresses) it also makes the
// sets hold exactly those elements, in the same batch, and records gen as
// the generation synced. With w it also makes the pod range sets hold w's ranges
// (elems then holds the local sets' elements too); without, the window's sets keep what
// they hold (nothing in a new table).
func (r *Ruleset) program(elems map[string]map[netip.Addr]bool, gen uint64, w *Window) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	want := build(r.cfg, r.mode)
	node := buildNode(want.table, r.cfg, r.mode)
	c := r.conn

	// Read everything first: a failed read must not leave half a batch
	// queued on the connection for the next Flush to send.
	var chains []*nftables.Chain
	var sets []*nftables.Set
	exists, err := r.tableExists()
	if err != nil {
		return err
	}
	if exists {
		all, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			return fmt.Errorf("nft: list chains: %w", err)
		}
		for _, ch := range all {
			if ch.Table != nil && ch.Table.Name == TableName {
				ch.Table = want.table
				chains = append(chains, ch)
			}
		}
		if sets, err = c.GetSets(want.table); err != nil {
			return fmt.Errorf("nft: list sets: %w", err)
		}
	}
	var diffs []setDiff
	if elems != nil {
		addrSets := want.sets
		if w != nil {
			addrSets = slices.Concat(want.sets, want.window[:len(localDefs)], node.sets)
		}
		for _, w := range addrSets {
			kept := slices.ContainsFunc(sets, func(s *nftables.Set) bool { return sameSet(s, w) })
			df, err := r.diff(w, elems[w.Name], kept)
			if err != nil {
				return err
			}
			diffs = append(diffs, df)
		}
	}

	c.AddTable(want.table)
	// Flush every existing chain first: afterwards no rule references a set
	// or jumps to a chain, so any of them can be deleted.
	for _, ch := range chains {
		c.FlushChain(ch)
	}
	wantChains := []*nftables.Chain{want.chain}
	for _, cr := range node.chains {
		wantChains = append(wantChains, cr.chain)
	}
	for _, ch := range chains {
		if !slices.ContainsFunc(wantChains, func(w *nftables.Chain) bool { return sameChain(ch, w) }) {
			c.DelChain(ch)
		}
	}
	wantSets := slices.Concat(want.sets, want.caches, want.window, node.sets, node.windows)
	for _, s := range sets {
		if !slices.ContainsFunc(wantSets, func(w *nftables.Set) bool { return sameSet(s, w) }) {
			c.DelSet(s)
		}
	}
	for _, s := range wantSets {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("nft: add set %s: %w", s.Name, err)
		}
	}
	for _, s := range want.caches {
		if slices.ContainsFunc(sets, func(have *nftables.Set) bool { return sameSet(have, s) }) {
			c.FlushSet(s) // kept, with an earlier run's verdicts
		}
	}
	for _, ch := range wantChains {
		c.AddChain(ch)
	}
	if _, err := queueDiffs(c, diffs); err != nil {
		return err
	}
	if w != nil {
		kept := func(s *nftables.Set) bool {
			return slices.ContainsFunc(sets, func(have *nftables.Set) bool { return sameSet(have, s) })
		}
		for i, ranges := range w.ranges() {
			if err := queueRanges(c, rangeSetsOf(want.table, rangePairs[i]), kept, ranges); err != nil {
				return err
			}
		}
	}
	for _, cr := range append([]chainRules{{want.chain, want.rules}}, node.chains...) {
		for _, ru := range cr.rules {
			c.AddRule(&nftables.Rule{Table: want.table, Chain: cr.chain, Exprs: ru.exprs})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft: program table inet %s: %w", TableName, err)
	}
	r.gen, r.synced, r.elems = gen, elems != nil, elems
	if w != nil {
		r.ranges, r.rangesSynced = cloneRanges(w.ranges()), true
	}
	return nil
}

// rangeSetsOf returns the interval sets of defs in t.
func rangeSetsOf(t *nftables.Table, defs []setDef) []*nftables.Set {
	var out []*nftables.Set
	for _, d := range defs {
		out = append(out, newRangeSet(t, d))
	}
	return out
}

func cloneRanges(rs [3][]netip.Prefix) [3][]netip.Prefix {
	for i := range rs {
		rs[i] = slices.Clone(rs[i])
	}
	return rs
}

func (r *Ruleset) tableExists() (bool, error) {
	tables, err := r.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("nft: list tables: %w", err)
	}
	return slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }), nil
}

// sameChain reports whether an existing chain can be updated in place into
// want: same name, and for a base chain the same type, hook and priority
// (the kernel refuses to change those; the policy it does update).
func sameChain(have, want *nftables.Chain) bool {
	return have.Name == want.Name &&
		have.Type == want.Type &&
		have.Hooknum != nil && *have.Hooknum == *want.Hooknum &&
		have.Priority != nil && *have.Priority == *want.Priority &&
		have.Device == ""
}

// sameSet reports whether an existing set can be kept as want: same name,
// key type, timeout and size, and no flags that podwall does not set. (The
// kernel cannot change a set's key or flags; a set that differs is deleted
// and created again in Program's batch.)
func sameSet(have, want *nftables.Set) bool {
	return have.Name == want.Name &&
		have.KeyType.Name == want.KeyType.Name &&
		have.KeyType.Bytes == want.KeyType.Bytes &&
		!have.Anonymous && !have.Constant && have.Interval == want.Interval && !have.IsMap && !have.Dynamic &&
		have.HasTimeout == want.HasTimeout && have.Timeout == want.Timeout &&
		have.Concatenation == want.Concatenation && have.Size == want.Size
}

// Sync makes the four address sets hold exactly the given addresses:
// ingress lists the local pod addresses isolated for ingress, egress those
// isolated for egress, IPv4 and IPv6 mixed; gen is the generation of the
// policy they come from. It reads the sets' current elements from the
// kernel and sends only the difference, as element deletions and additions
// in one transaction; when gen differs from the last Sync's, the same
// transaction empties the deny cache and the allow cache. When nothing
// differs it sends nothing.
// IPv4-mapped IPv6 addresses count as IPv4; zones are dropped. An invalid
// (zero) address is an error and nothing is changed.
//
// Call Sync before the policy of gen takes effect anywhere else (the agent
// swaps its snapshot after): from the moment Sync returns, AddDenied and
// AddAllowed take verdicts of gen only, and no verdict of an earlier
// generation is left in either cache.
func (r *Ruleset) Sync(gen uint64, ingress, egress []netip.Addr) error {
	return r.sync(gen, ingress, egress, nil)
}

// SyncWindow is Sync that also makes the new-pod window's sets hold w, in the same
// transaction: the local and own-node sets by difference, each pair of range sets (the pod
// ranges, the own-node window's) emptied and refilled when its ranges changed.
func (r *Ruleset) SyncWindow(gen uint64, ingress, egress []netip.Addr, w Window) error {
	return r.sync(gen, ingress, egress, &w)
}

func (r *Ruleset) sync(gen uint64, ingress, egress []netip.Addr, w *Window) error {
	want, err := wantElements(ingress, egress)
	if err != nil {
		return err
	}
	defs := setDefs
	if w != nil {
		if err := wantLocal(want, w.Local); err != nil {
			return err
		}
		if err := wantNode(want, w.NodeIngress, w.NodeEgress); err != nil {
			return err
		}
		defs = slices.Concat(setDefs, localDefs, nodeDefs)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	t := newTable()
	// Read all four sets before queuing any change, so that a failed read
	// leaves nothing queued on the connection.
	var diffs []setDiff
	for _, d := range defs {
		df, err := r.diff(newSet(t, d), want[d.name], true)
		if err != nil {
			return err
		}
		diffs = append(diffs, df)
	}
	changed, err := queueDiffs(r.conn, diffs)
	if err != nil {
		return err
	}
	if w != nil {
		for i, ranges := range w.ranges() {
			if r.rangesSynced && slices.Equal(r.ranges[i], ranges) {
				continue
			}
			if err := queueRanges(r.conn, rangeSetsOf(t, rangePairs[i]), func(*nftables.Set) bool { return true }, ranges); err != nil {
				return err
			}
			changed = true
		}
	}
	if !r.synced || gen != r.gen {
		for _, s := range cacheSets(t, r.cfg) {
			r.conn.FlushSet(s)
			changed = true
		}
	}
	if changed {
		if err := r.conn.Flush(); err != nil {
			return fmt.Errorf("nft: sync sets: %w", err)
		}
	}
	r.gen, r.synced, r.elems = gen, true, want
	if w != nil {
		r.ranges, r.rangesSynced = cloneRanges(w.ranges()), true
	}
	return nil
}

// wantLocal adds the local sets' elements to want.
func wantLocal(want map[string]map[netip.Addr]bool, local []netip.Addr) error {
	return syncErr(addByFamily(want, local, SetLocal4, SetLocal6, "local pod address"))
}

// queueRanges queues on c the emptying of the pod range sets that exist (kept) and the
// addition of ranges: sets[0] takes the IPv4 ranges, sets[1] the IPv6 ones.
func queueRanges(c *nftables.Conn, sets []*nftables.Set, kept func(*nftables.Set) bool, ranges []netip.Prefix) error {
	for i, s := range sets {
		if kept(s) {
			c.FlushSet(s)
		}
		if elems := rangeElements(ranges, i == 1); len(elems) > 0 {
			if err := c.SetAddElements(s, elems); err != nil {
				return fmt.Errorf("nft: add to set %s: %w", s.Name, err)
			}
		}
	}
	return nil
}

// wantElements sorts the addresses into the four sets: set name → elements.
func wantElements(ingress, egress []netip.Addr) (map[string]map[netip.Addr]bool, error) {
	want := map[string]map[netip.Addr]bool{}
	bad := addByFamily(want, ingress, SetIngress4, SetIngress6, "address")
	bad = append(bad, addByFamily(want, egress, SetEgress4, SetEgress6, "address")...)
	if err := syncErr(bad); err != nil {
		return nil, err
	}
	return want, nil
}

// addByFamily makes want[v4] and want[v6] hold addrs, IPv4 and IPv6 (unmapped, without a
// zone) apart, and returns one error per invalid address, naming it what.
func addByFamily(want map[string]map[netip.Addr]bool, addrs []netip.Addr, v4, v6, what string) []error {
	want[v4], want[v6] = map[netip.Addr]bool{}, map[netip.Addr]bool{}
	var bad []error
	for i, a := range addrs {
		if !a.IsValid() {
			bad = append(bad, fmt.Errorf("invalid %s at index %d", what, i))
			continue
		}
		a = a.Unmap().WithZone("")
		if a.Is4() {
			want[v4][a] = true
		} else {
			want[v6][a] = true
		}
	}
	return bad
}

// syncErr is the error of a sync that met the invalid addresses of bad; nil when none.
func syncErr(bad []error) error {
	if len(bad) > 0 {
		return fmt.Errorf("nft: sync: %w", errors.Join(bad...))
	}
	return nil
}

// setDiff is what turns a set's elements into the wanted ones.
type setDiff struct {
	set      *nftables.Set
	del, add []netip.Addr
}

// diff reads the elements of s from the kernel when exists (otherwise it is
// taken as empty) and returns the changes that make it hold exactly want.
// Call with r.mu held.
func (r *Ruleset) diff(s *nftables.Set, want map[netip.Addr]bool, exists bool) (setDiff, error) {
	df := setDiff{set: s}
	have := map[netip.Addr]bool{}
	if exists {
		elems, err := r.conn.GetSetElements(s)
		if err != nil {
			return df, fmt.Errorf("nft: read set %s: %w", s.Name, err)
		}
		for _, e := range elems {
			a, ok := netip.AddrFromSlice(e.Key)
			if !ok {
				return df, fmt.Errorf("nft: set %s holds a %d-byte key", s.Name, len(e.Key))
			}
			have[a] = true
			if !want[a] {
				df.del = append(df.del, a)
			}
		}
	}
	for a := range want {
		if !have[a] {
			df.add = append(df.add, a)
		}
	}
	slices.SortFunc(df.del, netip.Addr.Compare)
	slices.SortFunc(df.add, netip.Addr.Compare)
	return df, nil
}

// queueDiffs queues the element deletions and additions on c, and reports
// whether there were any.
func queueDiffs(c *nftables.Conn, diffs []setDiff) (bool, error) {
	changed := false
	for _, df := range diffs {
		for chunk := range slices.Chunk(df.del, maxElemsPerMsg) {
			if err := c.SetDeleteElements(df.set, elements(chunk)); err != nil {
				return changed, fmt.Errorf("nft: delete from set %s: %w", df.set.Name, err)
			}
			changed = true
		}
		for chunk := range slices.Chunk(df.add, maxElemsPerMsg) {
			if err := c.SetAddElements(df.set, elements(chunk)); err != nil {
				return changed, fmt.Errorf("nft: add to set %s: %w", df.set.Name, err)
			}
			changed = true
		}
	}
	return changed, nil
}

func elements(addrs []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, len(addrs))
	for i, a := range addrs {
		out[i] = nftables.SetElement{Key: a.AsSlice()}
	}
	return out
}

// AddDenied puts flows that the agent denied under policy generation gen
// into the deny cache: for Config.DenyCacheTTL the kernel drops new packets
// of each flow (same source, destination, protocol and destination port)
// before they reach the queue. Flows of a protocol without ports
// (flow.Proto.HasPorts) are left out, and so are duplicates; a flow already
// in the cache is not an error. It returns the number of flows written.
// More than maxCachedPerBatch flows go in several transactions; when one
// fails (a set full at DenyCacheSize), the flows of the earlier ones stay.
//
// Verdicts of a generation other than the last Sync's are refused with
// ErrStale and nothing is added. The check and the addition happen under
// the lock that Sync holds while it empties the cache, so no verdict of a
// replaced policy can enter the cache after Sync has emptied it.
func (r *Ruleset) AddDenied(gen uint64, flows []flow.Flow) (int, error) {
	return r.addCached(denyCache, gen, cacheElements(flows))
}

// cacheElements returns the cache elements of flows, IPv4 ([0]) and IPv6 ([1]), without
// duplicates and without the flows a cache does not take (cacheKey).
func cacheElements(flows []flow.Flow) [2][]nftables.SetElement {
	var elems [2][]nftables.SetElement
	seen := make(map[string]bool, len(flows))
	for _, f := range flows {
		key, v6, ok := cacheKey(f)
		if !ok || seen[string(key)] {
			continue
		}
		seen[string(key)] = true
		elems[b2i(v6)] = append(elems[b2i(v6)], nftables.SetElement{Key: key})
	}
	return elems
}

// AddAllowed puts flows that the agent allowed under policy generation gen into the allow
// cache: for Config.AllowCacheTTL the kernel accepts new packets of each flow (same source,
// destination, protocol and destination port) before they reach the queue. As AddDenied
// otherwise: no protocol without ports, no duplicates, ErrStale for another generation's
// verdicts, checked under Sync's lock.
func (r *Ruleset) AddAllowed(gen uint64, flows []flow.Flow) (int, error) {
	return r.addCached(allowCache, gen, cacheElements(flows))
}

// b2i is 1 for true, 0 for false: the index of a family in [2] (IPv4, IPv6).
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// addCached adds the IPv4 (elems[0]) and IPv6 (elems[1]) elements to the sets of cache k,
// if gen is the generation in force, in transactions of at most maxCachedPerBatch elements.
func (r *Ruleset) addCached(k cacheKind, gen uint64, elems [2][]nftables.SetElement) (int, error) {
	ttl := k.ttl(r.cfg)
	if ttl == 0 {
		return 0, fmt.Errorf("nft: %s cache off (its TTL is 0)", k.name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, ErrClosed
	}
	if !r.synced || gen != r.gen {
		return 0, ErrStale
	}
	n := len(elems[0]) + len(elems[1])
	if n == 0 {
		return 0, nil
	}
	t := newTable()
	added := 0
	for i, d := range k.defs {
		s := k.newSet(t, d, ttl)
		for batch := range slices.Chunk(elems[i], maxCachedPerBatch) {
			for chunk := range slices.Chunk(batch, maxElemsPerMsg) {
				if err := r.conn.SetAddElements(s, chunk); err != nil {
					return added, fmt.Errorf("nft: add to set %s: %w", s.Name, err)
				}
			}
			if err := r.conn.Flush(); errors.Is(err, unix.ENFILE) {
				return added, fmt.Errorf("nft: %s cache full (set %s holds at most %d flows): %w", k.name, s.Name, k.size, err)
			} else if err != nil {
				return added, fmt.Errorf("nft: add to the %s cache: %w", k.name, err)
			}
			added += len(batch)
		}
	}
	return added, nil
}

// cacheKey returns the verdict caches' key of f, as the rule builds it from a packet:
// source address, destination address, protocol in a 4-byte field, destination port (big
// endian) in a 4-byte field. It reports whether the key is IPv6, and not ok for flows the
// caches do not take (no ports, invalid or mixed-family addresses).
func cacheKey(f flow.Flow) (key []byte, v6, ok bool) {
	src, dst := f.Src.Unmap(), f.Dst.Unmap()
	if !f.Proto.HasPorts() || !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return nil, false, false
	}
	key = make([]byte, 0, 40)
	key = append(key, src.AsSlice()...)
	key = append(key, dst.AsSlice()...)
	key = append(key, byte(f.Proto), 0, 0, 0)
	key = binary.BigEndian.AppendUint16(key, f.Port)
	key = append(key, 0, 0)
	return key, src.Is6(), true
}

// Counters are the packet counts of the ruleset's rules since they were
// last (re)created by Program.
type Counters struct {
	// Egress4 … Ingress6 count packets sent to userspace by the queue rule
	// of that set: every packet of a connection until a reply has passed
	// (normally just the first), including retransmissions of a first
	// packet that was dropped.
	Egress4, Egress6, Ingress4, Ingress6 uint64
	// Spoofed counts packets dropped by the anti-spoofing rules.
	Spoofed uint64
	// DenyCached counts packets dropped by the deny-cache rules: new packets
	// of flows denied less than Config.DenyCacheTTL ago, which never reached
	// the queue.
	DenyCached uint64
	// AllowCached counts packets accepted by the allow-cache rules: new packets of
	// flows allowed less than Config.AllowCacheTTL ago, which never reached the queue.
	AllowCached uint64
	// Window counts packets sent to userspace by the new-pod window's rules: from or to
	// an address of the node's pod ranges that no local pod known to the policy has.
	Window uint64
	// Revoked counts packets dropped because their connection is marked revoked
	// (Config.RevokedMark), in either direction.
	Revoked uint64
	// NodeEgress counts packets sent to userspace by the input chain's queue rules: from a
	// local pod of the nodeegress sets to its own node. NodeIngress counts those of the
	// output chain: from the node to a local pod of the nodeingress sets.
	NodeEgress, NodeIngress uint64
}

// Counters reads the rule counters from the kernel.
func (r *Ruleset) Counters() (Counters, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return Counters{}, ErrClosed
	}
	t := newTable()
	rules, err := r.conn.GetRules(t, newChain(t))
	if err != nil {
		return Counters{}, fmt.Errorf("nft: read rules: %w", err)
	}
	for _, ch := range buildNode(t, r.cfg, r.mode).chains {
		more, err := r.conn.GetRules(t, ch.chain)
		if err != nil {
			return Counters{}, fmt.Errorf("nft: read rules of chain %s: %w", ch.chain.Name, err)
		}
		rules = append(rules, more...)
	}
	var out Counters
	for _, ru := range rules {
		var set string
		var fib, mark bool
		var packets uint64
		for _, e := range ru.Exprs {
			switch e := e.(type) {
			case *expr.Lookup:
				set = e.SetName
			case *expr.Fib:
				fib = true
			case *expr.Ct:
				mark = mark || e.Key == expr.CtKeyMARK
			case *expr.Counter:
				packets = e.Packets
			}
		}
		switch {
		case fib:
			out.Spoofed += packets
		case mark:
			out.Revoked += packets
		case set == SetEgress4:
			out.Egress4 += packets
		case set == SetEgress6:
			out.Egress6 += packets
		case set == SetIngress4:
			out.Ingress4 += packets
		case set == SetIngress6:
			out.Ingress6 += packets
		case set == SetDenied4, set == SetDenied6:
			out.DenyCached += packets
		case set == SetAllowed4, set == SetAllowed6:
			out.AllowCached += packets
		case set == SetLocal4, set == SetLocal6:
			out.Window += packets
		case set == SetNodeEgress4, set == SetNodeEgress6:
			out.NodeEgress += packets
		case set == SetNodeIngress4, set == SetNodeIngress6:
			out.NodeIngress += packets
		}
	}
	return out, nil
}

// Close releases the netlink connection. With keep the table stays in the
// kernel and goes on enforcing Config.FailOpen's policy while no agent
// serves the queues — the normal shutdown and restart path, since the next
// Program takes the table over. Without keep the table is deleted (it is
// not an error if it is already gone): uninstall only, because deleting
// the hooked table drops every packet queued at that moment.
func (r *Ruleset) Close(keep bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var err error
	if !keep {
		r.conn.DelTable(newTable())
		if ferr := r.conn.Flush(); ferr != nil && !errors.Is(ferr, unix.ENOENT) {
			err = fmt.Errorf("nft: delete table inet %s: %w", TableName, ferr)
		}
	}
	return errors.Join(err, r.conn.CloseLasting())
}
