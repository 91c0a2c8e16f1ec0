package main

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
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
		o := runOpts{manifests: "dir", queues: tc.queues, cacheSize: 1, logFormat: "text",
			flowHistory: 1, flowLogInterval: time.Second, flowLogMaxSize: "1Mi"}
		if err := o.validate(); (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "--queues")) {
			t.Errorf("--queues %d: %v, want ok=%v", tc.queues, err, tc.ok)
		}
	}
}

// The flow log flags are checked up front, all problems reported together.
func TestFlowLogFlags(t *testing.T) {
	o := runOpts{manifests: "dir", queues: 1, cacheSize: 1, logFormat: "text",
		flowHistory: 0, flowLogInterval: 0, flowLogMaxSize: "lots", flowLogMaxFiles: -1}
	err := o.validate()
	for _, flag := range []string{"--flow-history", "--flow-log-interval", "--flow-log-max-size", "--flow-log-max-files"} {
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%v: want an error naming %s", err, flag)
		}
	}
	o = runOpts{flowLogMaxSize: "10Mi"}
	if n, err := o.maxFlowLogSize(); err != nil || n != 10<<20 {
		t.Errorf("10Mi: %d, %v", n, err)
	}
}
