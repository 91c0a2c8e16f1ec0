package main

import (
	"fmt"
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

// --pod-cidr takes CIDRs, repeated or comma-separated, masked; anything else is refused with
// the value named. --hold-timeout is bounded.
func TestPodCIDRAndHoldFlags(t *testing.T) {
	cmd := newRunCmd()
	if err := cmd.Flags().Parse([]string{"--pod-cidr", "10.244.1.7/24,fd00:10:244:1::/64", "--pod-cidr", "10.245.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	o := runOpts{manifests: "dir", queues: 1, cacheSize: 1, logFormat: "text",
		flowHistory: 1, flowLogInterval: time.Second, flowLogMaxSize: "100Mi"}
	o.podCIDRs, _ = cmd.Flags().GetStringSlice("pod-cidr")
	got, err := o.parsePodCIDRs()
	if err != nil || fmt.Sprint(got) != "[10.244.1.0/24 fd00:10:244:1::/64 10.245.0.0/16]" {
		t.Errorf("--pod-cidr: %v, %v", got, err)
	}
	for _, bad := range []string{"10.244.1.0", "10.244.1.0/33", "::ffff:10.0.0.0/104", "pods"} {
		o.podCIDRs = []string{bad}
		if err := o.validate(); err == nil || !strings.Contains(err.Error(), "--pod-cidr \""+bad+"\"") {
			t.Errorf("--pod-cidr %s: %v, want an error naming it", bad, err)
		}
	}
	o.podCIDRs = nil
	for _, tc := range []struct {
		d  time.Duration
		ok bool
	}{{0, true}, {2 * time.Second, true}, {time.Minute, true}, {-time.Second, false}, {2 * time.Minute, false}} {
		o.holdTimeout = tc.d
		if err := o.validate(); (err == nil) != tc.ok {
			t.Errorf("--hold-timeout %v: %v, want ok=%v", tc.d, err, tc.ok)
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
