package load

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CPUTimes is the system-wide busy and total time from /proc/stat, in ticks.
type CPUTimes struct{ Busy, Total uint64 }

// ReadCPU reads the aggregate "cpu" line of /proc/stat.
func ReadCPU() (CPUTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUTimes{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return CPUTimes{}, fmt.Errorf("/proc/stat: unexpected %q", line)
	}
	var t CPUTimes
	for i, s := range f[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		t.Total += v
		if i != 3 && i != 4 { // idle, iowait
			t.Busy += v
		}
	}
	return t, nil
}

// BusySince returns the fraction of all CPUs busy between prev and t.
func (t CPUTimes) BusySince(prev CPUTimes) float64 {
	if t.Total <= prev.Total {
		return 0
	}
	return float64(t.Busy-prev.Busy) / float64(t.Total-prev.Total)
}

// Mem is a process's memory from /proc/<pid>/status, in bytes.
type Mem struct {
	// RSS is VmRSS: RSSAnon (heap, stacks) + RSSFile (mapped files: the binary's pages
	// touched so far) + shared memory. HWM is VmHWM, the peak RSS.
	RSS, HWM, RSSAnon, RSSFile int64
}

// ProcStatus reads the memory lines of /proc/<pid>/status.
func ProcStatus(pid int) (Mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	var m Mem
	fields := map[string]*int64{"VmRSS": &m.RSS, "VmHWM": &m.HWM, "RssAnon": &m.RSSAnon, "RssFile": &m.RSSFile}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		p := fields[k]
		if !ok || p == nil {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return Mem{}, fmt.Errorf("/proc/%d/status: unexpected %q", pid, line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Mem{}, err
		}
		*p = n << 10
	}
	return m, nil
}

// ProcCPU returns the user+system CPU seconds process pid has used, or only its thread
// tid when one is given.
func ProcCPU(pid int, tid ...int) (float64, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	if len(tid) > 0 {
		path = fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid[0])
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: unexpected format", path)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: short", path)
	}
	// After the command: state(0) ... utime(11) stime(12), in clock ticks (USER_HZ=100).
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return float64(u+st) / 100, nil
}
