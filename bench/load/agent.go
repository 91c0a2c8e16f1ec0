package load

import (
	"context"
	"fmt"
	"net/http"
	"syscall"
	"time"

	"github.com/podwall/podwall/e2e/agent"
	"github.com/podwall/podwall/e2e/lab"
)

// Agent is a `podwall run` process in a node's namespace: e2e/agent's, plus what the
// harness reads (metrics, CPU, RSS).
type Agent struct {
	*agent.Agent
}

// StartAgent runs `podwall run --manifests manifests --node-name nodeName` with args inside
// node's namespace. Metrics are served on 127.0.0.1:9090 and debug on 127.0.0.1:9091 of
// that namespace.
func StartAgent(node *lab.Node, binary, manifests, nodeName string, args ...string) (*Agent, error) {
	a, err := agent.Start(node, agent.Config{Binary: binary, Manifests: manifests, NodeName: nodeName, Args: args})
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return &Agent{a}, nil
}

// Metrics scrapes /metrics.
func (a *Agent) Metrics(ctx context.Context) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	code, body, err := a.Get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("load: /metrics: %d", code)
	}
	return ParseMetrics(body)
}

// Stop sends SIGTERM and waits for the exit, killing the process after timeout.
func (a *Agent) Stop(timeout time.Duration) error { return a.Agent.Stop(syscall.SIGTERM, timeout) }
