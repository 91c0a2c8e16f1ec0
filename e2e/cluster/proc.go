package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one server process with its watchdog.
//
// The watchdog is a shell in its own process group that holds the read end of a pipe whose
// write end only this process has (Go opens every file close-on-exec, so no other child
// inherits it). When the test process dies, by any signal, the kernel closes the write end,
// the watchdog's read returns, and it kills the server: a killed test leaks no server.
// A normal stop kills the watchdog first, then the server, by their recorded PIDs.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error

	watchdog *exec.Cmd
	lifeline *os.File // write end of the watchdog's pipe
}

// watchdogScript waits for EOF on stdin, then stops the server whose PID is $1 and removes
// the directory $2, if given.
const watchdogScript = `read x; kill -TERM "$1" 2>/dev/null; sleep 5; kill -KILL "$1" 2>/dev/null; [ -z "$2" ] || rm -rf "$2"`

// startProc starts a server and its watchdog. When the test process dies, the watchdog
// stops the server and removes orphanDir (if not empty): what Stop would have done.
func startProc(name, bin string, args []string, env []string, logPath, orphanDir string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	p := &proc{name: name, logPath: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()

	r, w, err := os.Pipe()
	if err != nil {
		p.kill()
		return nil, err
	}
	defer r.Close()
	p.lifeline = w
	p.watchdog = exec.Command("sh", "-c", watchdogScript, "watchdog", strconv.Itoa(p.cmd.Process.Pid), orphanDir)
	p.watchdog.Stdin = r
	p.watchdog.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // no terminal signals
	if err := p.watchdog.Start(); err != nil {
		p.kill()
		w.Close()
		return nil, fmt.Errorf("start watchdog of %s: %w", name, err)
	}
	return p, nil
}

// exited reports whether the server has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the watchdog, then the server: sig, and SIGKILL when it has not exited after
// grace.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if p.watchdog != nil && p.watchdog.Process != nil {
		_ = p.watchdog.Process.Kill()
		_ = p.watchdog.Wait()
		p.lifeline.Close()
		p.watchdog = nil
	}
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// logTail returns the last lines of the server's log.
func (p *proc) logTail(lines int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	all := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return string(bytes.Join(all, []byte("\n")))
}

// exitError describes how the server ended, with its last log lines.
func (p *proc) exitError() error {
	return fmt.Errorf("%s exited: %v\n%s", p.name, p.waitErr, p.logTail(30))
}

// serverEnv is the environment without the variables a server would read as flags: etcd
// takes every ETCD_* variable as one.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

var errStopped = errors.New("cluster stopped")
