// Package agent runs the real podwall binary inside a lab node's network namespace and talks
// to its HTTP endpoints from inside that namespace. The e2e tests and `podwall demo` use it,
// so what they exercise is exactly what an operator runs.
package agent

import (
	"bytes"
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

	"github.com/podwall/podwall/e2e/lab"
)

// Agent is one podwall process running in a node's namespace.
type Agent struct {
	Node        *lab.Node
	MetricsAddr string
	cmd         *exec.Cmd
	client      *http.Client
	logs        *syncBuffer
	done        chan struct{}
	waitErr     error
}

// Config says how to start the agent.
type Config struct {
	Binary    string // path to the podwall binary
	Manifests string // file or directory; empty when Args give the source (--kubeconfig)
	NodeName  string
	// Args are extra flags for `podwall run`.
	Args []string
	// Log, when set, receives the agent's stderr as well as the internal buffer.
	Log io.Writer
}

// Start launches `podwall run` inside node's namespace. The metrics listener is on
// 127.0.0.1:9090 of that namespace, the debug listener on 127.0.0.1:9091.
func Start(node *lab.Node, c Config) (*Agent, error) {
	a := &Agent{Node: node, MetricsAddr: "127.0.0.1:9090", logs: &syncBuffer{}, done: make(chan struct{})}
	args := []string{"netns", "exec", node.Name(), c.Binary, "run"}
	if c.Manifests != "" {
		args = append(args, "--manifests", c.Manifests)
	}
	args = append(append(args, "--node-name", c.NodeName,
		"--metrics-addr", a.MetricsAddr, "--debug-addr", "127.0.0.1:9091",
		"--pod-interfaces", "pw"), c.Args...)
	a.cmd = exec.Command("ip", args...)
	var w io.Writer = a.logs
	if c.Log != nil {
		w = io.MultiWriter(a.logs, c.Log)
	}
	a.cmd.Stdout, a.cmd.Stderr = w, w
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	a.client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := node.Do(func() (err error) {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
		DisableKeepAlives: true,
	}}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start podwall in %s: %w", node.Name(), err)
	}
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.done)
	}()
	return a, nil
}

// Get fetches a path from the agent's metrics listener (or the debug listener for /debug/).
func (a *Agent) Get(ctx context.Context, path string) (int, string, error) {
	addr := a.MetricsAddr
	if strings.HasPrefix(path, "/debug/") {
		addr = "127.0.0.1:9091"
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

// WaitReady polls /readyz until it answers 200, the agent exits, or ctx ends.
func (a *Agent) WaitReady(ctx context.Context) error {
	for {
		code, body, err := a.Get(ctx, "/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-a.done:
			return fmt.Errorf("podwall exited before ready: %v\n%s", a.waitErr, a.Logs())
		case <-ctx.Done():
			return fmt.Errorf("podwall not ready (last: %d %q %v): %w\n%s", code, body, err, ctx.Err(), a.Logs())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Generation returns the policy generation /readyz reports.
func (a *Agent) Generation(ctx context.Context) (uint64, error) {
	code, body, err := a.Get(ctx, "/readyz")
	if err != nil {
		return 0, err
	}
	var g uint64
	if _, err := fmt.Sscanf(body, "ok generation=%d", &g); err != nil || code != http.StatusOK {
		return 0, fmt.Errorf("readyz: %d %q", code, body)
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

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
