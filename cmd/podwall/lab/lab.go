package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

const (
	// DefaultPrefix starts the name of every lab namespace: "pwlab-<runid>-<role>".
	DefaultPrefix = "pwlab-"
	// DefaultVethPrefix starts the node-side name of every pod veth.
	DefaultVethPrefix = "pw"

	// RunDir holds one owner file per live run: RunDir/<runid>.
	RunDir = "/run/pwlab"
	// netnsDir is where named namespaces are bind-mounted (iproute2's convention).
	netnsDir = "/run/netns"

	// underlayRole names the namespace holding the underlay bridge.
	underlayRole = "underlay"
	// externalVethPrefix starts the node-side veth of an external host. It
	// must not start with the pod veth prefix, so a firewall matching pod
	// interfaces by prefix does not treat external hosts as pods.
	externalVethPrefix = "xh"
	// underlayIf is the node's interface on the underlay.
	underlayIf = "ul0"
	// podIf is the interface inside a pod or external host.
	podIf = "eth0"
)

// Options configures New. The zero value is valid.
type Options struct {
	// Prefix starts every namespace name; default DefaultPrefix. Sweep must
	// be given the same prefix to find this lab's leftovers.
	Prefix string
	// RunID names this run; default 6 random hex digits. It must be
	// lower-case alphanumeric, 1–12 characters, and unused.
	RunID string
	// VethPrefix starts the node-side name of every pod veth, so a firewall
	// can match pod interfaces by name prefix; default DefaultVethPrefix.
	// At most 7 characters of [a-z0-9], not starting with "x" (external
	// hosts' veths start with "xh") and not a prefix of "ul0" or "lo".
	VethPrefix string
	// Log, when set, receives one line per lab event (namespace created,
	// lab closed). Logf is used when Log is nil.
	Log io.Writer
	// Logf, when set, receives the same lines as Log, e.g. testing.T.Logf.
	Logf func(format string, args ...any)
}

// Lab is a set of network namespaces forming a small cluster: nodes joined
// by an underlay bridge, pods and external hosts attached to nodes. All
// methods are safe for concurrent use; topology changes are serialised.
type Lab struct {
	prefix     string // "pwlab-"
	runID      string
	vethPrefix string
	logf       func(format string, args ...any)
	created    time.Time

	mu       sync.Mutex
	closed   bool
	underlay *NS
	nss      []*NS // every namespace, in creation order
	nodes    []*Node
	roles    map[string]bool
	veths    map[string]bool // node-side names in use, "role/ifname"
}

var (
	runIDRe = regexp.MustCompile(`^[a-z0-9]{1,12}$`)
	roleRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	vethRe  = regexp.MustCompile(`^[a-z0-9]{1,7}$`)
)

// New starts a lab: it records the calling process as the owner of the run
// in RunDir/<runid> (so Sweep in a later run can tell that this run is
// gone) and returns an empty lab. Add nodes, pods and external hosts, and
// defer Close.
func New(opts Options) (*Lab, error) {
	l := &Lab{
		prefix:     opts.Prefix,
		runID:      opts.RunID,
		vethPrefix: opts.VethPrefix,
		roles:      map[string]bool{underlayRole: true},
		veths:      map[string]bool{},
		created:    time.Now(),
	}
	if l.prefix == "" {
		l.prefix = DefaultPrefix
	}
	if l.vethPrefix == "" {
		l.vethPrefix = DefaultVethPrefix
	}
	var errs []error
	if !roleRe.MatchString(strings.TrimSuffix(l.prefix, "-")) || !strings.HasSuffix(l.prefix, "-") {
		errs = append(errs, fmt.Errorf("prefix %q: want letters, digits, '.', '_' or '-', ending in '-'", l.prefix))
	}
	if l.runID != "" && !runIDRe.MatchString(l.runID) {
		errs = append(errs, fmt.Errorf("run id %q: want 1-12 characters of [a-z0-9]", l.runID))
	}
	if !vethRe.MatchString(l.vethPrefix) {
		errs = append(errs, fmt.Errorf("veth prefix %q: want 1-7 characters of [a-z0-9]", l.vethPrefix))
	} else if strings.HasPrefix(l.vethPrefix, "x") || strings.HasPrefix(underlayIf, l.vethPrefix) || strings.HasPrefix("lo", l.vethPrefix) {
		errs = append(errs, fmt.Errorf("veth prefix %q would also match the lab's own interfaces (xh*, %s, lo)", l.vethPrefix, underlayIf))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	switch {
	case opts.Log != nil:
		w := opts.Log
		var mu sync.Mutex
		l.logf = func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(w, "lab: "+format+"\n", args...)
		}
	case opts.Logf != nil:
		l.logf = opts.Logf
	default:
		l.logf = func(string, ...any) {}
	}

	if os.Geteuid() != 0 {
		return nil, errors.New("lab: network namespaces need root")
	}
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	fixed := l.runID != ""
	for try := 0; ; try++ {
		if !fixed {
			l.runID = randomHex(3)
		}
		err := writeOwner(filepath.Join(RunDir, l.runID))
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) || fixed || try == 10 {
			return nil, fmt.Errorf("lab: run %s: %w", l.runID, err)
		}
	}
	l.logf("run %s: namespaces %s%s-*", l.runID, l.prefix, l.runID)
	return l, nil
}

// RunID returns the id of this run, the middle part of every namespace name.
func (l *Lab) RunID() string { return l.runID }

// Prefix returns the common start of this lab's namespace names,
// "<prefix><runid>-".
func (l *Lab) Prefix() string { return l.prefix + l.runID + "-" }

// VethPrefix returns the prefix of the node-side pod veth names.
func (l *Lab) VethPrefix() string { return l.vethPrefix }

// Nodes returns the nodes in the order they were added.
func (l *Lab) Nodes() []*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Node(nil), l.nodes...)
}

// Namespaces returns every namespace of the lab (underlay, nodes, pods,
// external hosts) in creation order.
func (l *Lab) Namespaces() []*NS {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*NS(nil), l.nss...)
}

// Close stops the servers started in the lab's namespaces, deletes every
// namespace (which deletes their veths and routes) and the run's owner
// file. It is idempotent; later calls return nil. Processes started with
// (*NS).Exec are not killed: they keep their namespace alive, unnamed,
// until they exit.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	start := time.Now()
	var errs []error
	for i := len(l.nss) - 1; i >= 0; i-- {
		l.nss[i].closeServers()
	}
	// Pods and external hosts first, then nodes, then the underlay: each
	// deletion takes the veths towards earlier namespaces with it.
	for i := len(l.nss) - 1; i >= 0; i-- {
		if err := l.nss[i].destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(filepath.Join(RunDir, l.runID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	l.logf("run %s: closed %d namespaces in %v", l.runID, len(l.nss), time.Since(start).Round(time.Millisecond))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab: close run %s: %w", l.runID, err)
	}
	return nil
}

// claimRole reserves a role name; l.mu must be held.
func (l *Lab) claimRole(role string) error {
	if l.closed {
		return errors.New("lab is closed")
	}
	if !roleRe.MatchString(role) {
		return fmt.Errorf("name %q: want 1-63 letters, digits, '.', '_' or '-', not starting with a symbol", role)
	}
	if l.roles[role] {
		return fmt.Errorf("name %q is already used in this lab", role)
	}
	l.roles[role] = true
	return nil
}

// nsName returns the full namespace name of role.
func (l *Lab) nsName(role string) string { return l.Prefix() + role }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// addrOK reports whether a is set and of the wanted family.
func addrOK(a netip.Addr, v6 bool) bool {
	return a.IsValid() && a.Is6() == v6 && !a.Is4In6()
}
