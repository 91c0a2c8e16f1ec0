package datapath

// TEMPORARY: knobs to measure reader variants with the load harness (bench/); removed once
// decided.

import (
	"os"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	expBatch  = envInt("PODWALL_EXP_BATCH", 16)
	expPin    = os.Getenv("PODWALL_EXP_PIN") == "1"
	expThread = os.Getenv("PODWALL_EXP_THREAD") == "1"
	expNice   = envInt("PODWALL_EXP_NICE", 0)
)

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

func (r *reader) experiment() {
	if expPin || expThread || expNice != 0 {
		runtime.LockOSThread()
	}
	if expPin {
		var set unix.CPUSet
		n := runtime.NumCPU()
		for c := range n {
			if c%int(r.q.cfg.Queues) == int(r.num-r.q.cfg.QueueNum) {
				set.Set(c)
			}
		}
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			r.q.cfg.Log.Error("pin", "err", err)
		}
	}
	if expNice != 0 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), expNice); err != nil {
			r.q.cfg.Log.Error("nice", "err", err)
		}
	}
	if expThread {
		r.rc.Control(func(fd uintptr) {
			unix.SetNonblock(int(fd), false)
			unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
		})
	}
	r.q.cfg.Log.Info("reader experiment", "batch", expBatch, "pin", expPin, "thread", expThread, "nice", expNice)
}

// read reads one datagram; with expThread it blocks in the kernel once nothing is held.
func (r *reader) read(fd int) (int, error) {
	if !expThread {
		return unix.Read(fd, r.buf)
	}
	flags := 0
	if r.n > 0 {
		flags = unix.MSG_DONTWAIT
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)), uintptr(flags), 0, 0)
	if e != 0 {
		if e == unix.EAGAIN && r.n == 0 {
			return 0, syscall.EINTR // timeout with nothing held: read again
		}
		return 0, e
	}
	return int(n), nil
}
