package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// The agent gives Go 90 % of the container's memory limit as its soft limit, from the bytes
// the DaemonSet passes (or a quantity); GOMEMLIMIT, when set, wins; nothing set, nothing done.
func TestSetMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	for _, tc := range []struct {
		limit, gomemlimit string
		want              int64 // -1: an error
	}{
		{"536870912", "", 483183820},
		{"512Mi", "", 483183820},
		{"1Gi", "", 966367641},
		{"", "", 0},
		{"536870912", "400MiB", 0},
		{"lots", "", -1},
		{"-1", "", -1},
	} {
		t.Setenv("GOMEMLIMIT", tc.gomemlimit)
		debug.SetMemoryLimit(math.MaxInt64)
		got, err := setMemoryLimit(tc.limit)
		if tc.want < 0 {
			if err == nil {
				t.Errorf("%q: no error", tc.limit)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q (GOMEMLIMIT %q): %d, %v; want %d", tc.limit, tc.gomemlimit, got, err, tc.want)
		}
		wantGo := tc.want
		if wantGo == 0 {
			wantGo = math.MaxInt64 // untouched
		}
		if g := debug.SetMemoryLimit(-1); g != wantGo {
			t.Errorf("%q: Go's limit %d, want %d", tc.limit, g, wantGo)
		}
	}
}
