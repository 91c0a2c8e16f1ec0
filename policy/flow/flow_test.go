package flow

import (
	"net/netip"
	"testing"
)

func TestProto(t *testing.T) {
	for _, tc := range []struct {
		p        Proto
		s        string
		hasPorts bool
	}{
		{TCP, "TCP", true}, {UDP, "UDP", true}, {SCTP, "SCTP", true},
		{ICMP, "ICMP", false}, {ICMPv6, "ICMPv6", false}, {47, "proto-47", false}, {0, "proto-0", false},
	} {
		if got := tc.p.String(); got != tc.s {
			t.Errorf("Proto(%d).String() = %q, want %q", tc.p, got, tc.s)
		}
		if got := string(tc.p.AppendTo([]byte("x "))); got != "x "+tc.s {
			t.Errorf("Proto(%d).AppendTo = %q, want %q", tc.p, got, "x "+tc.s)
		}
		if got := tc.p.HasPorts(); got != tc.hasPorts {
			t.Errorf("Proto(%d).HasPorts() = %v, want %v", tc.p, got, tc.hasPorts)
		}
	}
}

func TestParseProto(t *testing.T) {
	for s, want := range map[string]Proto{"tcp": TCP, "UDP": UDP, "Sctp": SCTP, "icmp": ICMP, "ICMPv6": ICMPv6} {
		got, err := ParseProto(s)
		if err != nil || got != want {
			t.Errorf("ParseProto(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "tcp6", "17", "GRE"} {
		if _, err := ParseProto(s); err == nil {
			t.Errorf("ParseProto(%q): want an error", s)
		}
	}
}

func TestFlowString(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::2")
	for _, tc := range []struct {
		f    Flow
		want string
	}{
		{Flow{Src: a, Dst: a, Proto: TCP, Port: 80}, "TCP 10.0.0.1 → 10.0.0.1:80"},
		{Flow{Src: b, Dst: b, Proto: UDP, Port: 53}, "UDP fd00::2 → [fd00::2]:53"},
		{Flow{Src: a, Dst: a, Proto: ICMP}, "ICMP 10.0.0.1 → 10.0.0.1"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}
