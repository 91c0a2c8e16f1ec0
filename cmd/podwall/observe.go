package main

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/explain"
)

// This file owns what the agent does with each verdict and what it shows on the debug
// listener.

// observe is called by the datapath for every verdict, on a queue reader's goroutine. It
// must not block and allocates nothing.
//
// It asks the snapshot in force for the decision on the flow (Decide: no allocation; for a
// flow-cache hit too, whose verdict came from the same generation), counts it in the
// metrics (per direction and per policy), and — only when the decision stream has a
// subscriber — hands a Record to the stream's hub, which copies it into each subscriber's
// buffer without blocking. With no subscriber the stream costs one atomic load.
func (a *agent) observe(r *datapath.Record) {
	snap := a.engine.snap.Load()
	f := r.Flow
	var d policy.Decision
	if r.Malformed == nil {
		d = snap.Decide(f)
	}
	a.metrics.observe(r, &d)
	if !a.stream.Active() {
		return
	}
	a.stream.Publish(&decisions.Record{Time: r.Time, Flow: f, SrcPort: r.SrcPort, Allow: r.Allow, Decision: d,
		Snapshot: snap, CacheHit: r.CacheHit, Latency: r.Latency, Queue: r.Queue, Malformed: r.Malformed})
}

// debugRoutes adds the agent's own pages to the debug listener:
//
//	/debug/            the live page (decisions.Page)
//	/debug/decisions   the decision stream, NDJSON or SSE (decisions.Handler)
//	/debug/explain     ?from=&to=&port=&protocol=: `podwall explain -o json` on the live snapshot
func (a *agent) debugRoutes(mux *http.ServeMux) {
	mux.Handle("GET /debug/{$}", decisions.Page())
	mux.Handle("GET /debug", http.RedirectHandler("/debug/", http.StatusMovedPermanently))
	mux.Handle("GET /debug/decisions", decisions.Handler(&a.stream))
	mux.HandleFunc("GET /debug/explain", a.serveExplain)
}

// serveExplain answers one explain query from the snapshot in force, with exactly the JSON
// of `podwall explain -o json` (the same defaults: protocol TCP, port 0). A bad query gets
// 400 and the answer with "error" set, as a --batch line would.
func (a *agent) serveExplain(w http.ResponseWriter, r *http.Request) {
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
		res = explain.Judge(a.engine.snap.Load(), q)
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
