package whatif

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
	"github.com/podwall/podwall/policy/flows"
)

// Flow is one recorded flow, merged over its records.
type Flow struct {
	Flow flow.Flow
	// Connections is the number of connections recorded (see the package doc).
	Connections uint64
	First, Last time.Time
	// Nodes are the nodes whose agents recorded the flow, sorted.
	Nodes []string
}

// Flows collects recorded flows from any number of inputs (Read).
type Flows struct {
	byFlow map[flow.Flow]map[string]*Flow // by node
}

// record is the union of the fields of a flow line and a decision line that what-if reads.
type record struct {
	Type        string    `json:"type"`
	Node        string    `json:"node"`
	Protocol    string    `json:"protocol"`
	Src         string    `json:"src"`
	Dst         string    `json:"dst"`
	DstPort     uint16    `json:"dstPort"`
	Connections uint64    `json:"connections"`
	First       time.Time `json:"first"`
	Last        time.Time `json:"last"`
	Time        time.Time `json:"time"`
	Malformed   string    `json:"malformed"`
}

// Read adds the flows of r, NDJSON, to fs. name names r in errors ("name:line: ..."); a line
// that is not a flow or decision record is an error, and nothing of r is added then.
func (fs *Flows) Read(r io.Reader, name string) error {
	if fs.byFlow == nil {
		fs.byFlow = map[flow.Flow]map[string]*Flow{}
	}
	type read struct {
		f    flow.Flow
		node string
		n    uint64
		t0   time.Time
		t1   time.Time
	}
	var got []read
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 4<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var rec record
		if err := json.Unmarshal([]byte(text), &rec); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: not a JSON flow or decision record: %v", name, line, err))
			continue
		}
		rd := read{node: rec.Node}
		switch rec.Type {
		case flows.TypeFlow:
			rd.n, rd.t0, rd.t1 = rec.Connections, rec.First, rec.Last
		case decisions.TypeDecision:
			if rec.Malformed != "" {
				continue
			}
			rd.n, rd.t0, rd.t1 = 1, rec.Time, rec.Time
		case "":
			errs = append(errs, fmt.Errorf("%s:%d: no \"type\": want a line of /debug/flows, a flow log or podwall tail -o json", name, line))
			continue
		default:
			continue // "dropped" and other notes of a stream
		}
		f, err := parseFlow(&rec)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", name, line, err))
			continue
		}
		rd.f = f
		got = append(got, rd)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	if len(errs) > 10 {
		errs = append(errs[:10], fmt.Errorf("%s: and %d more bad lines", name, len(errs)-10))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, rd := range got {
		byNode := fs.byFlow[rd.f]
		if byNode == nil {
			byNode = map[string]*Flow{}
			fs.byFlow[rd.f] = byNode
		}
		a := byNode[rd.node]
		if a == nil {
			a = &Flow{Flow: rd.f, First: rd.t0, Last: rd.t1}
			byNode[rd.node] = a
		}
		a.Connections += rd.n
		if !rd.t0.IsZero() && (a.First.IsZero() || rd.t0.Before(a.First)) {
			a.First = rd.t0
		}
		if rd.t1.After(a.Last) {
			a.Last = rd.t1
		}
	}
	return nil
}

func parseFlow(rec *record) (flow.Flow, error) {
	var f flow.Flow
	var err error
	if f.Src, err = netip.ParseAddr(rec.Src); err != nil {
		return f, fmt.Errorf("src: %w", err)
	}
	if f.Dst, err = netip.ParseAddr(rec.Dst); err != nil {
		return f, fmt.Errorf("dst: %w", err)
	}
	f.Src, f.Dst = f.Src.Unmap(), f.Dst.Unmap()
	if f.Src.Is4() != f.Dst.Is4() {
		return f, fmt.Errorf("src %s and dst %s are of different IP families", f.Src, f.Dst)
	}
	if n, ok := strings.CutPrefix(rec.Protocol, "proto-"); ok {
		p, err := strconv.ParseUint(n, 10, 8)
		if err != nil {
			return f, fmt.Errorf("protocol %q: %w", rec.Protocol, err)
		}
		f.Proto = flow.Proto(p)
	} else if f.Proto, err = flow.ParseProto(rec.Protocol); err != nil {
		return f, err
	}
	if f.Proto.HasPorts() {
		f.Port = rec.DstPort
	}
	return f, nil
}

// List returns the flows collected, each merged over its nodes: the largest node's count,
// the earliest first and the latest last time.
func (fs *Flows) List() []Flow {
	out := make([]Flow, 0, len(fs.byFlow))
	for _, byNode := range fs.byFlow {
		var m Flow
		for i, node := range slices.Sorted(maps.Keys(byNode)) {
			a := byNode[node]
			if i == 0 {
				m = Flow{Flow: a.Flow, First: a.First, Last: a.Last}
			}
			m.Connections = max(m.Connections, a.Connections)
			if !a.First.IsZero() && (m.First.IsZero() || a.First.Before(m.First)) {
				m.First = a.First
			}
			if a.Last.After(m.Last) {
				m.Last = a.Last
			}
			if node != "" {
				m.Nodes = append(m.Nodes, node)
			}
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Flow) int { return cmp.Compare(a.Flow.String(), b.Flow.String()) })
	return out
}

// Verdict is a flow's verdict in one state and why.
type Verdict struct {
	Verdict string `json:"verdict"` // "allow" or "deny"
	Reason  string `json:"reason"`
	// Policies decided: those isolating a denying direction, or allowing the flow.
	Policies []string           `json:"policies,omitempty"`
	SrcPod   string             `json:"srcPod,omitempty"`
	DstPod   string             `json:"dstPod,omitempty"`
	Egress   *explain.Judgement `json:"egress,omitempty"`
	Ingress  *explain.Judgement `json:"ingress,omitempty"`
}

func judge(s *policy.Snapshot, f flow.Flow) Verdict {
	x := s.Explain(f)
	v := Verdict{Verdict: x.Verdict.String(), Reason: x.Reason,
		Egress: explain.JudgementOf(&x.Egress), Ingress: explain.JudgementOf(&x.Ingress)}
	if x.Src != nil {
		v.SrcPod = x.Src.Key()
	}
	if x.Dst != nil {
		v.DstPod = x.Dst.Key()
	}
	for _, j := range []*explain.Judgement{v.Egress, v.Ingress} {
		if x.Verdict == policy.Deny && j.Verdict != "deny" {
			continue
		}
		for _, p := range j.Policies {
			if !slices.Contains(v.Policies, p) {
				v.Policies = append(v.Policies, p)
			}
		}
	}
	return v
}

// Change kinds.
const (
	NewlyDenied  = "newly-denied"
	NewlyAllowed = "newly-allowed"
)

// Change is a flow whose verdict would change.
type Change struct {
	Kind string
	Flow
	// Policies are the policies responsible (see the package doc), sorted.
	Policies      []string
	Before, After Verdict
}

// Judge re-judges flows under before (the state in force) and after (with the change) and
// returns the flows whose verdict differs: newly denied first, then by responsible policies,
// most connections first.
func Judge(before, after *policy.Snapshot, flows []Flow) []Change {
	var out []Change
	for _, f := range flows {
		db, da := before.Decide(f.Flow), after.Decide(f.Flow)
		if db.Verdict == da.Verdict {
			continue
		}
		c := Change{Kind: NewlyAllowed, Flow: f, Before: judge(before, f.Flow), After: judge(after, f.Flow)}
		if da.Verdict == policy.Deny {
			c.Kind = NewlyDenied
		}
		c.Policies = slices.Clone(c.After.Policies)
		if len(c.Policies) == 0 {
			c.Policies = slices.Clone(c.Before.Policies)
		}
		slices.Sort(c.Policies)
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b Change) int {
		if a.Kind != b.Kind {
			if a.Kind == NewlyDenied {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(strings.Join(a.Policies, ","), strings.Join(b.Policies, ",")); c != 0 {
			return c
		}
		return cmp.Compare(b.Connections, a.Connections)
	})
	return out
}

// Line is a Change as `podwall what-if -o json` writes it, one per line. Its fields are a
// contract: add fields, never change or remove one.
type Line struct {
	Change      string             `json:"change"` // "newly-denied" or "newly-allowed"
	Policies    []string           `json:"policies"`
	Family      string             `json:"family"`
	Protocol    string             `json:"protocol"`
	Src         string             `json:"src"`
	Dst         string             `json:"dst"`
	DstPort     uint16             `json:"dstPort"`
	SrcPod      string             `json:"srcPod,omitempty"`
	DstPod      string             `json:"dstPod,omitempty"`
	Connections uint64             `json:"connections"`
	First       *time.Time         `json:"first,omitempty"`
	Last        *time.Time         `json:"last,omitempty"`
	Nodes       []string           `json:"nodes,omitempty"`
	Verdict     string             `json:"verdict"`
	Reason      string             `json:"reason"`
	Egress      *explain.Judgement `json:"egress,omitempty"`
	Ingress     *explain.Judgement `json:"ingress,omitempty"`
	// Was is the verdict under the policy in force.
	Was Verdict `json:"was"`
}

// LineOf spells a Change out.
func LineOf(c *Change) Line {
	l := Line{
		Change: c.Kind, Policies: c.Policies, Protocol: c.Flow.Flow.Proto.String(),
		Src: c.Flow.Flow.Src.String(), Dst: c.Flow.Flow.Dst.String(), DstPort: c.Flow.Flow.Port,
		SrcPod: c.After.SrcPod, DstPod: c.After.DstPod, Connections: c.Connections, Nodes: c.Nodes,
		Verdict: c.After.Verdict, Reason: c.After.Reason, Egress: c.After.Egress, Ingress: c.After.Ingress, Was: c.Before,
	}
	if l.Policies == nil {
		l.Policies = []string{}
	}
	if c.Flow.Flow.Src.Is4() {
		l.Family = "IPv4"
	} else {
		l.Family = "IPv6"
	}
	if !c.First.IsZero() {
		l.First, l.Last = &c.First, &c.Last
	}
	l.Was.Egress, l.Was.Ingress = nil, nil // the reason says it; the new judgements are the point
	return l
}

// WriteJSON writes one Line per change.
func WriteJSON(w io.Writer, changes []Change) error {
	enc := json.NewEncoder(w)
	for i := range changes {
		if err := enc.Encode(LineOf(&changes[i])); err != nil {
			return err
		}
	}
	return nil
}

// WriteText writes the changes for people: a summary, then each group (kind and policies)
// with its flows, their counts and the new reason, then the newly isolated pods (see
// Isolation). judged is the number of flows re-judged.
func WriteText(w io.Writer, changes []Change, judged int, isolated []Isolation) error {
	bw := bufio.NewWriter(w)
	denied := 0
	for _, c := range changes {
		if c.Kind == NewlyDenied {
			denied++
		}
	}
	if len(changes) == 0 {
		fmt.Fprintf(bw, "No verdict would change: %d recorded %s re-judged.\n", judged, plural(judged, "flow", "flows"))
		writeIsolated(bw, isolated)
		return bw.Flush()
	}
	fmt.Fprintf(bw, "%d of %d recorded %s would change: %d newly denied, %d newly allowed.\n",
		len(changes), judged, plural(judged, "flow", "flows"), denied, len(changes)-denied)
	for i := 0; i < len(changes); {
		j := i
		var conns uint64
		for ; j < len(changes) && changes[j].Kind == changes[i].Kind && slices.Equal(changes[j].Policies, changes[i].Policies); j++ {
			conns += changes[j].Connections
		}
		what := "Newly denied"
		if changes[i].Kind == NewlyAllowed {
			what = "Newly allowed"
		}
		by := strings.Join(changes[i].Policies, ", ")
		if by == "" {
			by = "no policy"
		}
		fmt.Fprintf(bw, "\n%s by %s: %d %s, %d %s\n", what, by, j-i, plural(j-i, "flow", "flows"), conns, plural(int(conns), "connection", "connections"))
		for _, c := range changes[i:j] {
			fmt.Fprintf(bw, "  %s -> %s %s  %d %s\n    %s\n", end(c.After.SrcPod, c.Flow.Flow.Src), end(c.After.DstPod, c.Flow.Flow.Dst),
				portText(c.Flow.Flow), c.Connections, plural(int(c.Connections), "connection", "connections"), c.After.Reason)
		}
		i = j
	}
	writeIsolated(bw, isolated)
	return bw.Flush()
}

// writeIsolated notes the pods the change newly isolates.
func writeIsolated(w io.Writer, isolated []Isolation) {
	if len(isolated) == 0 {
		return
	}
	fmt.Fprintf(w, "\nNewly isolated: the agents recorded connections of these pods only where the other end was\n"+
		"isolated; the change may deny others, not listed above:\n")
	for _, iso := range isolated {
		fmt.Fprintf(w, "  %s for %s by %s\n", iso.Pod, iso.Direction, strings.Join(iso.Policies, ", "))
	}
}

func end(pod string, a netip.Addr) string {
	if pod == "" {
		return a.String()
	}
	return pod + " (" + a.String() + ")"
}

func portText(f flow.Flow) string {
	if f.Proto.HasPorts() {
		return f.Proto.String() + "/" + strconv.Itoa(int(f.Port))
	}
	return f.Proto.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
