package load

import (
	"os"
	"runtime"
	"strings"
	"time"
)

// Machine describes where a measurement ran.
type Machine struct {
	Date    string
	CPUs    int
	CPU     string // model name from /proc/cpuinfo
	Kernel  string // uname -r
	Go      string
	LoadAvg string // /proc/loadavg at the start: the machine is shared
}

// ReadMachine describes this machine now.
func ReadMachine() Machine {
	m := Machine{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}
