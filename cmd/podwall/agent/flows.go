package agent

import (
	"context"
	"net/http"

	"github.com/podwall/podwall/policy/flows"
	"github.com/podwall/podwall/policy/manifests"
)

// This file wires the flow history and the flow log (policy/flows) into the agent: observe
// offers every verdict to the Recorder; Run runs it; the debug listener serves its history at
// /debug/flows and the state in force at /debug/state (the two inputs of `podwall what-if`).

// newFlows makes the Recorder, and opens the flow log when one is configured.
func (a *Agent) newFlows() error {
	cfg := flows.Config{Node: a.cfg.Node, Producers: int(a.cfg.Queues), Size: a.cfg.FlowHistory, Snapshot: a.inForce.of,
		Proposal: a.staged.byID, Count: a.metrics.take,
		Interval: a.cfg.FlowLogInterval, Logger: a.log}
	if a.cfg.FlowLog != "" {
		f, err := flows.OpenFile(a.cfg.FlowLog, a.cfg.FlowLogMaxSize, a.cfg.FlowLogMaxFiles)
		if err != nil {
			return err
		}
		a.flowLog, cfg.Log = f, f
	}
	a.flows = flows.NewRecorder(cfg)
	a.metrics.flush = a.flows.Flush
	return nil
}

// runFlows runs the Recorder until the returned stop is called: stop waits for it to write
// its last interval, then closes the flow log.
func (a *Agent) runFlows(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.flows.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
		if a.flowLog != nil {
			if err := a.flowLog.Close(); err != nil {
				a.log.Error("closing the flow log", "err", err)
			}
		}
	}
}

// serveFlows serves the flow history: NDJSON, one flows.Line per flow.
func (a *Agent) serveFlows(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	a.flows.WriteTo(w)
}

// serveState serves the objects of the state in force as one YAML v1 List (manifests.Objects):
// what `podwall what-if --addr` judges the proposed change against.
func (a *Agent) serveState(w http.ResponseWriter, _ *http.Request) {
	s := a.state.Load()
	if s == nil {
		http.Error(w, "no policy state applied yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	if err := manifests.EncodeList(w, manifests.Objects(*s)...); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
