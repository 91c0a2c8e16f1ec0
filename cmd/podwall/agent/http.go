package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/kube"
)

// listen starts the metrics and debug listeners. Binding happens here, so a busy port fails
// the start instead of a background goroutine.
func (a *Agent) listen() ([]*http.Server, error) {
	servers := []*http.Server{}
	add := func(addr string, h http.Handler) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, s)
		go s.Serve(ln)
		return nil
	}
	if err := add(a.cfg.MetricsAddr, a.metricsMux()); err != nil {
		return nil, err
	}
	if a.cfg.DebugAddr != "" {
		if err := add(a.cfg.DebugAddr, a.debugMux()); err != nil {
			servers[0].Close()
			return nil, err
		}
	}
	return servers, nil
}

// metricsMux serves the metrics listener:
//
//	/metrics   every series (cmd/podwall/README.md lists them)
//	/healthz   liveness: 503 once a queue reader has stopped (restart the agent)
//	/readyz    readiness: 200 "ok generation=N" once the first good policy is enforced by
//	           the kernel sets and the verdict engine, 503 with the reason before that and
//	           while stopping
func (a *Agent) metricsMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if a.queues != nil && a.queues.Stats().ReaderFailures > 0 {
			http.Error(w, "a queue reader stopped", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			msg := "not ready: first policy not compiled or datapath not programmed"
			if e := a.lastErr.Load(); e != nil {
				msg += ": " + *e
			}
			http.Error(w, msg+a.sourceReadyz(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok generation=%d%s\n", a.inForce.Generation(), a.sourceReadyz())
	})
	return mux
}

// statusSource is a source that reports its connection: the Kubernetes API.
type statusSource interface {
	Status() kube.Status
}

// sourceReadyz returns "\n" and the source's line for /readyz, or "" for sources without
// a connection. An unreachable API server does not make the agent unready once it has
// enforced a state: it keeps enforcing the last one, and says so here.
func (a *Agent) sourceReadyz() string {
	s, ok := a.cfg.Source.(statusSource)
	if !ok {
		return ""
	}
	return "\n" + s.Status().String()
}

// debugMux serves the debug listener:
//
//	/debug/            the live page (decisions.Page)
//	/debug/decisions   the decision stream, NDJSON or SSE (decisions.Handler)
//	/debug/explain     ?from=&to=&port=&protocol=: `podwall explain -o json` on the live snapshot
//	/debug/flows       the flow history, NDJSON (flows.go)
//	/debug/state       the objects of the policy state in force, a YAML v1 List (flows.go)
//	/debug/pprof/      Go's profiles
func (a *Agent) debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("GET /debug/{$}", decisions.Page())
	mux.Handle("GET /debug", http.RedirectHandler("/debug/", http.StatusMovedPermanently))
	mux.Handle("GET /debug/decisions", decisions.Handler(&a.stream))
	mux.HandleFunc("GET /debug/explain", a.serveExplain)
	mux.HandleFunc("GET /debug/flows", a.serveFlows)
	mux.HandleFunc("GET /debug/state", a.serveState)
	return mux
}

// serveExplain answers one explain query from the snapshot in force, with the JSON of
// `podwall explain -o json` (the same defaults: protocol TCP, port 0; "local" says which
// directions this node judges). A bad query gets 400 and the answer with "error" set, as a
// --batch line would.
func (a *Agent) serveExplain(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query()
	q := explain.Query{From: p.Get("from"), To: p.Get("to"), Port: "0", Protocol: p.Get("protocol")}
	if q.Protocol == "" {
		q.Protocol = "TCP"
	}
	var res explain.Answer
	switch port := p.Get("port"); {
	case q.From == "" || q.To == "":
		res = explain.Answer{From: q.From, To: q.To, Protocol: q.Protocol, Error: "from and to are required"}
	case port != "" && !isNumber(port):
		res = explain.Answer{From: q.From, To: q.To, Protocol: q.Protocol, Error: "port: want 0-65535, got " + strconv.Quote(port)}
	default:
		if port != "" {
			q.Port = json.Number(port)
		}
		res = explain.Judge(a.inForce.Load(), q)
	}
	w.Header().Set("Content-Type", "application/json")
	if res.Error != "" {
		w.WriteHeader(http.StatusBadRequest)
	}
	json.NewEncoder(w).Encode(res)
}

func isNumber(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}
