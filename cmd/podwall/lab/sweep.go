package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// owner identifies the process that created a run, as recorded in
// RunDir/<runid>: its PID and its start time in clock ticks since boot
// (field 22 of /proc/<pid>/stat), so a recycled PID is not taken for the
// owner.
type owner struct {
	pid   int
	start uint64
}

// writeOwner records the calling process as the owner of a run; it fails
// with os.ErrExist when the run id is taken.
func writeOwner(path string) error {
	start, err := procStart(os.Getpid())
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "pid %d\nstart %d\n", os.Getpid(), start)
	return errors.Join(err, f.Close())
}

func readOwner(path string) (owner, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return owner{}, err
	}
	var o owner
	if _, err := fmt.Sscanf(string(b), "pid %d\nstart %d\n", &o.pid, &o.start); err != nil {
		return owner{}, fmt.Errorf("%s: %w", path, err)
	}
	return o, nil
}

// alive reports whether the owner process still runs.
func (o owner) alive() bool {
	start, err := procStart(o.pid)
	return err == nil && start == o.start
}

// procStart returns the start time of a process in clock ticks since boot.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:]) // fields 3 and on
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Sweep deletes the lab namespaces of earlier runs that were not cleaned
// up, e.g. because the test binary was killed. It looks at the namespaces
// in /run/netns named prefix+"<runid>-<role>" (prefix "" means
// DefaultPrefix). A namespace is stale when the run's owner file
// RunDir/<runid> is missing or unreadable, or the process it names is gone
// (same PID with the same start time), and the namespace was created at
// least olderThan ago. A live run's namespaces are never removed. Owner
// files of dead runs that no namespace refers to any more are removed too.
//
// Sweep returns the names of the namespaces it deleted. Processes still
// running inside a stale namespace are not killed; they keep it alive,
// unnamed, until they exit.
func Sweep(prefix string, olderThan time.Duration) ([]string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab: sweep: %w", err)
	}
	now := time.Now()
	live := map[string]bool{} // run id → owner alive
	inUse := map[string]bool{}
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		runID, _, ok := strings.Cut(rest, "-")
		if !ok || !runIDRe.MatchString(runID) {
			continue
		}
		inUse[runID] = true
		alive, seen := live[runID]
		if !seen {
			o, err := readOwner(filepath.Join(RunDir, runID))
			alive = err == nil && o.alive()
			live[runID] = alive
		}
		if alive {
			continue
		}
		if olderThan > 0 {
			// The bind mount shows the namespace inode, whose times are
			// those of the namespace's creation.
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(netnsDir, name), &st); err == nil {
				if now.Sub(time.Unix(st.Ctim.Unix())) < olderThan {
					continue
				}
			}
		}
		if err := deleteNamed(name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	// Owner files of dead runs that have no namespace left.
	owners, err := os.ReadDir(RunDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range owners {
		runID := e.Name()
		if !runIDRe.MatchString(runID) || live[runID] {
			continue
		}
		if inUse[runID] && !noneLeft(prefix+runID+"-") {
			continue
		}
		path := filepath.Join(RunDir, runID)
		if o, err := readOwner(path); err == nil && o.alive() {
			continue
		}
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) < olderThan {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("lab: sweep: %w", err)
	}
	return removed, nil
}

// noneLeft reports whether no namespace name starting with runPrefix is left.
func noneLeft(runPrefix string) bool {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), runPrefix) {
			return false
		}
	}
	return true
}
