package e2e

import (
	"fmt"
	"strings"
)

// table is an expected reachability matrix, written as upstream's e2e prints it: a header
// of destinations, then one row per source, "." where the connection is allowed and "X"
// where it is denied.
//
//	     x/a x/b
//	x/a   .   X
//	x/b   .   .
type table struct {
	names []string
	allow map[[2]string]bool
}

// parseTable parses a table; it panics on a malformed one.
func parseTable(s string) table {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	t := table{names: strings.Fields(lines[0]), allow: map[[2]string]bool{}}
	if len(lines) != len(t.names)+1 {
		panic(fmt.Sprintf("table: %d rows for %d columns", len(lines)-1, len(t.names)))
	}
	for i, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) != len(t.names)+1 || f[0] != t.names[i] {
			panic(fmt.Sprintf("table: row %q: want %s and %d cells", line, t.names[i], len(t.names)))
		}
		for j, c := range f[1:] {
			if c != "." && c != "X" {
				panic(fmt.Sprintf("table: row %s: cell %q", f[0], c))
			}
			t.allow[[2]string{f[0], t.names[j]}] = c == "."
		}
	}
	return t
}

// probes returns one probe per cell, on port and protocol, sources in row order.
func (t table) probes(portNum uint16, protocol string) []probe {
	var out []probe
	for _, src := range t.names {
		for _, dst := range t.names {
			out = append(out, probe{from: src, to: dst, port: portNum, proto: protocol, allow: t.allow[[2]string{src, dst}]})
		}
	}
	return out
}

// denied counts the denied cells.
func (t table) denied() int {
	n := 0
	for _, a := range t.allow {
		if !a {
			n++
		}
	}
	return n
}

// allAllowed returns the table of names with every cell allowed.
func allAllowed(names ...string) string {
	var b strings.Builder
	b.WriteString(strings.Join(names, " ") + "\n")
	for _, n := range names {
		b.WriteString(n + strings.Repeat(" .", len(names)) + "\n")
	}
	return b.String()
}
