package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/podwall/podwall/e2e/lab"
)

// Agent addresses inside the node namespace.
const (
	metricsAddr = "127.0.0.1:9090"
	debugAddr   = "127.0.0.1:9091"
)

// Agent is a `podwall run` process in a node's namespace. Unlike e2e/agent it exposes the
// process id, for RSS and CPU readings.
type Agent struct {
	node    *lab.Node
	cmd     *exec.Cmd
	client  *http.Client
	logs    *logBuffer
	done    chan struct{}
	waitErr error
}

// StartAgent runs `podwall run --manifests manifests --node-name nodeName` with args inside
// node's namespace (`ip netns exec` execs, so the process is podwall itself). Metrics are
// served on 127.0.0.1:9090 and debug on 127.0.0.1:9091 of that namespace.
func StartAgent(node *lab.Node, binary, manifests, nodeName string, args ...string) (*Agent, error) {
	a := &Agent{node: node, logs: &logBuffer{}, done: make(chan struct{})}
	argv := append([]string{"netns", "exec", node.Name(), binary, "run",
		"--manifests", manifests, "--node-name", nodeName,
		"--metrics-addr", metricsAddr, "--debug-addr", debugAddr,
		"--pod-interfaces", lab.DefaultVethPrefix}, args...)
	a.cmd = exec.Command("ip", argv...)
	a.cmd.Stdout, a.cmd.Stderr = a.logs, a.logs
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	a.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := node.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		DisableKeepAlives: true,
	}}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("load: start podwall in %s: %w", node.Name(), err)
	}
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.done)
	}()
	return a, nil
}

// Pid returns the agent's process id.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Logs returns what the agent wrote so far.
func (a *Agent) Logs() string { return a.logs.String() }

// Get fetches path from the metrics listener, or the debug listener for /debug/ paths.
func (a *Agent) Get(ctx context.Context, path string) (int, []byte, error) {
	addr := metricsAddr
	if strings.HasPrefix(path, "/debug/") {
		addr = debugAddr
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Metrics scrapes /metrics.
func (a *Agent) Metrics(ctx context.Context) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	code, b, err := a.Get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("load: /metrics: %d", code)
	}
	return ParseMetrics(string(b))
}

// Generation returns the policy generation /readyz reports, or an error when not ready.
func (a *Agent) Generation(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	code, b, err := a.Get(ctx, "/readyz")
	if err != nil {
		return 0, err
	}
	var g uint64
	if _, err := fmt.Sscanf(string(b), "ok generation=%d", &g); err != nil || code != http.StatusOK {
		return 0, fmt.Errorf("readyz: %d %q", code, bytes.TrimSpace(b))
	}
	return g, nil
}

// WaitGeneration polls /readyz until the agent is ready with a generation above after
// (0: any), the agent exits, or ctx ends.
func (a *Agent) WaitGeneration(ctx context.Context, after uint64) (uint64, error) {
	for {
		g, err := a.Generation(ctx)
		if err == nil && g > after {
			return g, nil
		}
		select {
		case <-a.done:
			return 0, fmt.Errorf("load: podwall exited: %v\n%s", a.waitErr, a.Logs())
		case <-ctx.Done():
			return 0, fmt.Errorf("load: podwall not ready above generation %d (last: %d, %v): %w\n%s", after, g, err, ctx.Err(), a.Logs())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits for the exit, killing the process after timeout.
func (a *Agent) Stop(timeout time.Duration) error {
	select {
	case <-a.done:
		return nil
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		return nil
	case <-time.After(timeout):
		_ = a.cmd.Process.Kill()
		<-a.done
		return fmt.Errorf("load: podwall did not exit within %v of SIGTERM", timeout)
	}
}

// Kill sends SIGKILL and waits for the exit: the agent leaves its table and queue rules
// behind, unserved.
func (a *Agent) Kill() {
	_ = a.cmd.Process.Kill()
	<-a.done
}

// logBuffer keeps the last 64 KiB of the agent's output.
type logBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if over := len(l.b) - 64<<10; over > 0 {
		l.b = append(l.b[:0], l.b[over:]...)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
