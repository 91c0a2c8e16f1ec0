package main

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// --queues defaults to one per CPU, at most 64, so a node with more CPUs starts with the
// default; an explicit value above 64 is refused.
func TestQueuesDefault(t *testing.T) {
	f := newRunCmd().Flags().Lookup("queues")
	if want := strconv.Itoa(min(runtime.NumCPU(), 64)); f.DefValue != want {
		t.Errorf("--queues default %s, want %s", f.DefValue, want)
	}
	for _, tc := range []struct {
		queues int
		ok     bool
	}{{1, true}, {64, true}, {0, false}, {65, false}, {96, false}} {
		o := runOpts{manifests: "dir", queues: tc.queues, cacheSize: 1, logFormat: "text"}
		if err := o.validate(); (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "--queues")) {
			t.Errorf("--queues %d: %v, want ok=%v", tc.queues, err, tc.ok)
		}
	}
}
