package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/podwall/podwall/cmd/podwall/scrape"
)

// Agent is one `podwall run` process in a node's network namespace, started by
// Node.StartAgent; its HTTP endpoints are reached from inside that namespace. The e2e
// tests, the bench harness and `podwall demo` run the agent this way, so what they exercise
// is exactly what an operator runs.
type Agent struct {
	Node        *Node
	MetricsAddr string
	DebugAddr   string
	cmd         *exec.Cmd
	client      *http.Client
	logs        *logBuffer
	done        chan struct{}
	waitErr     error
}

// AgentConfig says how to start an agent.
type AgentConfig struct {
	Binary    string // path to the podwall binary
	Manifests string // file or directory; empty when Args give the source (--kubeconfig)
	NodeName  string
	// DebugAddr is the debug listener's address (--debug-addr); default 127.0.0.1:9091.
	// The node's own address makes it reachable from the lab's underlay, as
	// `podwall what-if --kubeconfig` needs (through the API server's pod proxy).
	DebugAddr string
	// Args are extra flags for `podwall run`.
	Args []string
	// Log, when set, receives the agent's stderr as well as the internal buffer.
	Log io.Writer
}

// StartAgent launches `podwall run` inside the node's namespace. The metrics listener is on
// 127.0.0.1:9090 of that namespace, the debug listener on c.DebugAddr (127.0.0.1:9091).
func (n *Node) StartAgent(c AgentConfig) (*Agent, error) {
	a := &Agent{Node: n, MetricsAddr: "127.0.0.1:9090", DebugAddr: c.DebugAddr, logs: &logBuffer{}, done: make(chan struct{})}
	if a.DebugAddr == "" {
		a.DebugAddr = "127.0.0.1:9091"
	}
	args := []string{"netns", "exec", n.Name(), c.Binary, "run"}
	if c.Manifests != "" {
		args = append(args, "--manifests", c.Manifests)
	}
	args = append(append(args, "--node-name", c.NodeName,
		"--metrics-addr", a.MetricsAddr, "--debug-addr", a.DebugAddr,
		"--pod-interfaces", "pw"), c.Args...)
	a.cmd = exec.Command("ip", args...)
	var w io.Writer = a.logs
	if c.Log != nil {
		w = io.MultiWriter(a.logs, c.Log)
	}
	a.cmd.Stdout, a.cmd.Stderr = w, w
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	a.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := n.Do(func() (err error) {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
		DisableKeepAlives: true,
	}}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start podwall in %s: %w", n.Name(), err)
	}
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.done)
	}()
	return a, nil
}

// Get fetches a path from the agent's metrics listener (or the debug listener for /debug/).
// Without a deadline on ctx it gives up after 2 s.
func (a *Agent) Get(ctx context.Context, path string) (int, string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
	}
	addr := a.MetricsAddr
	if strings.HasPrefix(path, "/debug/") {
		addr = a.DebugAddr
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Metrics scrapes /metrics. Without a deadline on ctx it gives up after 5 s: the page of
// an agent with many policies is large.
func (a *Agent) Metrics(ctx context.Context) (scrape.Samples, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	code, body, err := a.Get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics of the agent in %s: %d %s", a.Node.Name(), code, strings.TrimSpace(body))
	}
	return scrape.Parse(strings.NewReader(body))
}

// WaitReady polls /readyz until it answers 200, the agent exits, or ctx ends.
func (a *Agent) WaitReady(ctx context.Context) error {
	_, err := a.WaitGeneration(ctx, 0)
	return err
}

// WaitGeneration polls /readyz until the agent is ready with a policy generation above
// after, and returns it; it fails when the agent exits or ctx ends first.
func (a *Agent) WaitGeneration(ctx context.Context, after uint64) (uint64, error) {
	for {
		g, err := a.Generation(ctx)
		if err == nil && g > after {
			return g, nil
		}
		select {
		case <-a.done:
			return 0, fmt.Errorf("podwall exited before ready: %v\n%s", a.waitErr, a.Logs())
		case <-ctx.Done():
			return 0, fmt.Errorf("podwall not ready above generation %d (last: %d, %v): %w\n%s", after, g, err, ctx.Err(), a.Logs())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Pid returns the agent's process id (ip netns exec execs, so it is podwall itself).
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the exit: a crash, which leaves the table behind.
func (a *Agent) Kill() {
	_ = a.cmd.Process.Kill()
	<-a.done
}

// Generation returns the policy generation /readyz reports.
func (a *Agent) Generation(ctx context.Context) (uint64, error) {
	code, body, err := a.Get(ctx, "/readyz")
	if err != nil {
		return 0, err
	}
	var g uint64
	if _, err := fmt.Sscanf(body, "ok generation=%d", &g); err != nil || code != http.StatusOK {
		return 0, fmt.Errorf("readyz: %d %q", code, strings.TrimSpace(body))
	}
	return g, nil
}

// Stop sends sig and waits for the process to exit, killing it after timeout.
func (a *Agent) Stop(sig os.Signal, timeout time.Duration) error {
	if a.cmd.Process == nil {
		return nil
	}
	select {
	case <-a.done:
		return a.exitErr()
	default:
	}
	_ = a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
		return a.exitErr()
	case <-time.After(timeout):
		_ = a.cmd.Process.Kill()
		<-a.done
		return fmt.Errorf("podwall did not exit within %v of %v", timeout, sig)
	}
}

func (a *Agent) exitErr() error {
	var ee *exec.ExitError
	if errors.As(a.waitErr, &ee) && ee.ExitCode() == -1 {
		return nil // killed by our signal
	}
	return a.waitErr
}

// Exited reports whether the process has ended.
func (a *Agent) Exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// Logs returns what the agent wrote so far.
func (a *Agent) Logs() string { return a.logs.String() }

// logBuffer keeps the last 256 KiB of the agent's output.
type logBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if over := len(l.b) - 256<<10; over > 0 {
		l.b = append(l.b[:0], l.b[over:]...)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
