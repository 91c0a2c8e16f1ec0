package explain

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// Port is one column set of a matrix: a port and its protocol (Num 0 for protocols without
// ports).
type Port struct {
	Num   int
	Proto flow.Proto
}

// ParsePorts parses a comma-separated PORT/PROTOCOL list such as "80/TCP,53/UDP,0/ICMP"; the
// protocol defaults to TCP.
func ParsePorts(s string) ([]Port, error) {
	var out []Port
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		num, proto, ok := strings.Cut(item, "/")
		if !ok {
			proto = "TCP"
		}
		p, err := flow.ParseProto(proto)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", item, err)
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 0 || n > 65535 || (p.HasPorts() && n == 0) {
			return nil, fmt.Errorf("%q: bad port number", item)
		}
		out = append(out, Port{n, p})
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// matrixPods are the pods a matrix shows: live pods with an address, not hostNetwork.
func matrixPods(s *policy.Snapshot) []*policy.Pod {
	var pods []*policy.Pod
	for _, p := range s.Pods() {
		if len(p.IPs) > 0 && !p.HostNetwork && !p.Terminated() {
			pods = append(pods, p)
		}
	}
	return pods
}

// Matrix prints, per port, the reachability of every pod pair on their primary addresses:
// rows are sources, columns destinations, "." allowed, "X" denied, "-" no common family —
// the layout of the upstream e2e truth tables.
func Matrix(out io.Writer, s *policy.Snapshot, ports []Port) error {
	pods := matrixPods(s)
	w := bufio.NewWriter(out)
	for i, pp := range ports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s/%d  (rows: from, columns: to; . allow, X deny)\n", pp.Proto, pp.Num)
		tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
		fmt.Fprint(tw, "-")
		for _, b := range pods {
			fmt.Fprint(tw, "\t"+b.Key())
		}
		fmt.Fprintln(tw)
		denied := 0
		for _, a := range pods {
			fmt.Fprint(tw, a.Key())
			for _, b := range pods {
				cell := "."
				if a.IPs[0].Is4() != b.IPs[0].Is4() {
					cell = "-"
				} else {
					f := flow.Flow{Src: a.IPs[0], Dst: b.IPs[0], Proto: pp.Proto}
					if pp.Proto.HasPorts() {
						f.Port = uint16(pp.Num)
					}
					if s.Decide(f).Verdict == policy.Deny {
						cell = "X"
						denied++
					}
				}
				fmt.Fprint(tw, "\t"+cell)
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
		fmt.Fprintf(w, "%d of %d pairs denied\n", denied, len(pods)*len(pods))
	}
	return w.Flush()
}

// MatrixJSON writes the Answer of every pod pair of a common family, per port, one JSON line
// each.
func MatrixJSON(out io.Writer, s *policy.Snapshot, ports []Port) error {
	return MatrixJSONStaged(out, s, nil, ports)
}

// MatrixJSONStaged is MatrixJSON whose answers also carry what the staged policies of p
// would make of each pair (Answer.Staged) when p is not nil.
func MatrixJSONStaged(out io.Writer, s *policy.Snapshot, p *Proposal, ports []Port) error {
	pods := matrixPods(s)
	w := bufio.NewWriter(out)
	enc := json.NewEncoder(w)
	for _, pp := range ports {
		for _, a := range pods {
			for _, b := range pods {
				if a.IPs[0].Is4() != b.IPs[0].Is4() {
					continue
				}
				q := Query{From: a.Key(), To: b.Key(), Port: json.Number(strconv.Itoa(pp.Num)), Protocol: pp.Proto.String()}
				if err := enc.Encode(JudgeStaged(s, p, q)); err != nil {
					return err
				}
			}
		}
	}
	return w.Flush()
}
