package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"k8s.io/apimachinery/pkg/api/resource"
)

// memoryLimitEnv is where the DaemonSet puts the container's memory limit, in bytes
// (resourceFieldRef limits.memory, deploy/daemonset.yaml): the default of --memory-limit.
const memoryLimitEnv = "PODWALL_MEMORY_LIMIT"

// softMemoryShare is the part of the container's memory limit given to Go as its soft limit:
// the collector runs harder as the heap nears it, well before the kernel's OOM killer acts
// at the hard limit; the rest is for what Go does not count (thread stacks outside the heap,
// the kernel's socket buffers charged to the cgroup).
const softMemoryShare = 0.9

// setMemoryLimit sets Go's soft memory limit to 90 % of limit, a Kubernetes quantity ("512Mi"
// or bytes), and returns what it set. It sets nothing (0) when limit is empty or when
// GOMEMLIMIT is set (an explicit setting wins).
func setMemoryLimit(limit string) (int64, error) {
	if limit == "" || os.Getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(limit)
	if err != nil || q.Sign() <= 0 {
		return 0, fmt.Errorf("--memory-limit %q: want a positive quantity of bytes, such as 536870912 or 512Mi", limit)
	}
	soft := int64(float64(q.Value()) * softMemoryShare)
	debug.SetMemoryLimit(soft)
	return soft, nil
}
