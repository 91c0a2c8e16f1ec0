package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// listen starts the metrics and debug listeners. Binding happens here, so a busy port fails
// the start instead of a background goroutine.
//
// /healthz is liveness: 503 once a queue reader has stopped (restart the agent). /readyz is
// readiness: 200 "ok generation=N" once the first good policy is enforced by the kernel sets
// and the verdict engine, 503 with the reason before that and while stopping. README.md
// beside this file has the details and every metric.
func (a *agent) listen() ([]*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
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
		fmt.Fprintf(w, "ok generation=%d%s\n", a.engine.Generation(), a.sourceReadyz())
	})
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
	if err := add(a.o.metricsAddr, mux); err != nil {
		return nil, err
	}
	if a.o.debugAddr != "" {
		dmux := http.NewServeMux()
		dmux.HandleFunc("/debug/pprof/", pprof.Index)
		dmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		dmux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		dmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		a.debugRoutes(dmux)
		if err := add(a.o.debugAddr, dmux); err != nil {
			servers[0].Close()
			return nil, err
		}
	}
	return servers, nil
}
