package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/podwall/podwall/policy/decisions"
	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/kube"
)

// Listener limits. Both listeners answer GETs only and read no request body; the debug
// listener streams for as long as a client reads, so it has no write timeout (its stream
// bounds each write itself) and a larger header limit (a filter of 256 values).
var listeners = struct {
	// readHeaderTimeout disconnects a client that has not sent a whole request header in
	// this time (slowloris).
	readHeaderTimeout time.Duration
	// idleTimeout closes a keep-alive connection idle this long, so idle clients do not
	// hold the connection cap.
	idleTimeout time.Duration
	// metricsWriteTimeout bounds writing one metrics response.
	metricsWriteTimeout time.Duration
	// metricsHeaderBytes and debugHeaderBytes bound a request's header, URL included.
	metricsHeaderBytes, debugHeaderBytes int
	// metricsConns and debugConns cap the connections each listener serves at once
	// (netutil.LimitListener): past the cap, a new connection waits in the kernel's accept
	// queue until one closes. The debug cap leaves room beside the stream's 64 subscribers.
	metricsConns, debugConns int
}{
	readHeaderTimeout:   5 * time.Second,
	idleTimeout:         60 * time.Second,
	metricsWriteTimeout: 30 * time.Second,
	metricsHeaderBytes:  16 << 10,
	debugHeaderBytes:    128 << 10,
	metricsConns:        32,
	debugConns:          decisions.MaxSubscribers + 16,
}

// Request limits.
const (
	// maxBody is the largest request body accepted: no endpoint reads one.
	maxBody = 4 << 10
	// maxProfileSeconds bounds the seconds of a CPU profile, an execution trace or a delta
	// profile of /debug/pprof/ (Go's default for a CPU profile is 30).
	maxProfileSeconds = 30
)

// listen starts the metrics and debug listeners. Binding happens here, so a busy port fails
// the start instead of a background goroutine. Each server's Addr is the address bound.
func (a *Agent) listen() ([]*http.Server, error) {
	servers := []*http.Server{}
	add := func(addr string, s *http.Server, conns int) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		s.Addr = ln.Addr().String()
		s.ReadHeaderTimeout, s.IdleTimeout = listeners.readHeaderTimeout, listeners.idleTimeout
		servers = append(servers, s)
		go s.Serve(netutil.LimitListener(ln, conns))
		return nil
	}
	metrics := &http.Server{Handler: a.MetricsHandler(), WriteTimeout: listeners.metricsWriteTimeout,
		MaxHeaderBytes: listeners.metricsHeaderBytes}
	if err := add(a.cfg.MetricsAddr, metrics, listeners.metricsConns); err != nil {
		return nil, err
	}
	if a.cfg.DebugAddr != "" {
		debug := &http.Server{Handler: a.DebugHandler(), MaxHeaderBytes: listeners.debugHeaderBytes}
		if err := add(a.cfg.DebugAddr, debug, listeners.debugConns); err != nil {
			servers[0].Close()
			return nil, err
		}
	}
	return servers, nil
}

// noBody refuses a request that declares a body larger than maxBody (413) and cuts any
// other body at maxBody.
func noBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxBody {
			http.Error(w, fmt.Sprintf("request body of %d bytes: at most %d", r.ContentLength, maxBody), http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h.ServeHTTP(w, r)
	})
}

// localHost refuses (421 Misdirected Request) a request whose Host is not an IP address or
// "localhost", with or without a port. A web page can make a browser on the node send
// requests to 127.0.0.1 under a name it controls (DNS rebinding) and read the answers as its
// own origin; such a request carries that name as its Host. Address the debug listener by
// IP (or localhost, as kubectl port-forward does).
func localHost(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if _, err := netip.ParseAddr(host); err != nil && !strings.EqualFold(host, "localhost") {
			http.Error(w, fmt.Sprintf("debug listener: Host %q refused: address it by IP or localhost (a name could be DNS rebinding)", clip(r.Host)),
				http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// capSeconds refuses a pprof request for more than maxProfileSeconds seconds (400): a CPU
// profile or a trace runs for as long as asked, and only one runs at a time.
func capSeconds(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("seconds"); v != "" {
			if n, err := strconv.ParseFloat(v, 64); err != nil || !(n > 0 && n <= maxProfileSeconds) {
				http.Error(w, fmt.Sprintf("seconds %q: want more than 0 and at most %d", clip(v), maxProfileSeconds), http.StatusBadRequest)
				return
			}
		}
		h(w, r)
	}
}

// clip cuts a client's value quoted in an error to 64 bytes.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "…"
}

// metricsMux serves the metrics listener:
//
//	/metrics   every series (cmd/podwall/README.md lists them)
//	/healthz   liveness: 503 once a queue reader has stopped (restart the agent)
//	/readyz    readiness: 200 "ok generation=N" once the first good policy is enforced by
//	           the kernel sets and the verdict engine, 503 with the reason before that,
//	           while the kernel table is being restored after someone removed it
//	           (heal.go), and while stopping
func (a *Agent) metricsMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if a.queues != nil && a.queues.Stats().ReaderFailures > 0 {
			http.Error(w, "a queue reader stopped", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			msg := "not ready: first policy not compiled or datapath not programmed"
			if d := a.damage.Load(); d != nil {
				msg = "not ready: " + *d + " (restoring)"
			} else if e := a.lastErr.Load(); e != nil {
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
//	/debug/pprof/      Go's profiles (seconds at most 30)
func (a *Agent) debugMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", capSeconds(pprof.Index))
	mux.HandleFunc("/debug/pprof/profile", capSeconds(pprof.Profile))
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", capSeconds(pprof.Trace))
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
		res = explain.JudgeStaged(a.inForce.Load(), a.staged.proposal(), q)
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
