package load

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/podwall/podwall/e2e/lab"
)

// Metrics is one scrape of Prometheus text exposition: series (name with its labels, as
// written) → value. Only what the harness reads is needed: counters and histogram buckets.
type Metrics map[string]float64

// ParseMetrics reads the text exposition format, skipping comments.
func ParseMetrics(text string) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics: bad line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: bad value in %q: %w", line, err)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// Sub returns m - prev for every series of m (counters' increase between two scrapes).
func (m Metrics) Sub(prev Metrics) Metrics {
	d := Metrics{}
	for k, v := range m {
		d[k] = v - prev[k]
	}
	return d
}

// Sum adds every series whose name (before any '{') is name.
func (m Metrics) Sum(name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// Bucket is one cumulative histogram bucket.
type Bucket struct {
	Le    float64
	Count float64
}

// Histogram returns the cumulative buckets of histogram name, by upper bound.
func (m Metrics) Histogram(name string) []Bucket {
	var bs []Bucket
	prefix := name + `_bucket{le="`
	for k, v := range m {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(k[len(prefix):], `"}`), 64)
		if err != nil {
			continue
		}
		bs = append(bs, Bucket{le, v})
	}
	slices.SortFunc(bs, func(a, b Bucket) int {
		switch {
		case a.Le < b.Le:
			return -1
		case a.Le > b.Le:
			return 1
		}
		return 0
	})
	return bs
}

// HistogramQuantile estimates the q-quantile from cumulative buckets the way Prometheus'
// histogram_quantile does: linear interpolation inside the bucket that holds it, the lower
// bound of the first bucket being 0. It returns NaN without observations; a quantile in the
// +Inf bucket returns the largest finite bound.
func HistogramQuantile(q float64, bs []Bucket) float64 {
	if len(bs) == 0 || bs[len(bs)-1].Count == 0 {
		return math.NaN()
	}
	total := bs[len(bs)-1].Count
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range bs {
		if b.Count >= rank {
			if math.IsInf(b.Le, 1) {
				return lower
			}
			if b.Count == below {
				return b.Le
			}
			return lower + (b.Le-lower)*(rank-below)/(b.Count-below)
		}
		lower, below = b.Le, b.Count
	}
	return lower
}

// QueueStat is one line of /proc/net/netfilter/nfnetlink_queue: a bound queue.
type QueueStat struct {
	Queue uint16
	// Waiting is the packets queued now, not yet given a verdict.
	Waiting uint64
	// Dropped counts packets dropped because the queue was full; UserDropped those the
	// kernel could not send to the reader (its socket buffer was full: ENOBUFS).
	Dropped, UserDropped uint64
	// IDSequence is the id of the last packet queued: packets queued so far.
	IDSequence uint64
}

// QueueStats reads /proc/net/netfilter/nfnetlink_queue of namespace ns.
func QueueStats(ns *lab.NS) ([]QueueStat, error) {
	var b []byte
	err := ns.Do(func() (err error) {
		// thread-self: /proc/self/net would show the process leader's namespace.
		b, err = os.ReadFile("/proc/thread-self/net/netfilter/nfnetlink_queue")
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []QueueStat
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		n := make([]uint64, 8)
		for i := range n {
			n[i], _ = strconv.ParseUint(f[i], 10, 64)
		}
		// queue_number peer_portid queue_total copy_mode copy_range queue_dropped
		// queue_user_dropped id_sequence 1
		out = append(out, QueueStat{Queue: uint16(n[0]), Waiting: n[2], Dropped: n[5], UserDropped: n[6], IDSequence: n[7]})
	}
	return out, nil
}

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
