package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// do sends one request to srv with the given Host header and returns status and body.
func do(t *testing.T, srv *httptest.Server, method, path, host string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	c := srv.Client()
	c.Timeout = 10 * time.Second // what is refused is refused at once; a stream would not end
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("%s %s (Host %s): %v", method, path, host, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The debug listener answers only requests addressed to an IP or localhost: a page that
// rebinds its own name to 127.0.0.1 sends its name as Host and is refused.
func TestDebugRefusesForeignHost(t *testing.T) {
	a, _ := testAgent(t)
	srv := httptest.NewServer(a.DebugHandler())
	defer srv.Close()
	for _, host := range []string{"127.0.0.1:9091", "localhost:9091", "LOCALHOST", "[::1]:9091", "10.0.0.5", "[fe80::1%25eth0]:9091"} {
		if code, body := do(t, srv, "GET", "/debug/explain?from=prod/web&to=prod/db&port=3306", host, nil); code != 200 {
			t.Errorf("Host %s: %d %s", host, code, body)
		}
	}
	for _, host := range []string{"attacker.example:9091", "attacker.example", "localhost.attacker.example", "127.0.0.1.nip.io:9091"} {
		for _, path := range []string{"/debug/", "/debug/decisions", "/debug/explain?from=prod/web&to=prod/db", "/debug/pprof/"} {
			code, body := do(t, srv, "GET", path, host, nil)
			if code != http.StatusMisdirectedRequest || !strings.Contains(body, "Host") || !strings.Contains(body, "DNS rebinding") {
				t.Errorf("Host %s %s: %d %q, want 421 naming the Host", host, path, code, body)
			}
		}
	}
	if a.stream.Subscribers() != 0 {
		t.Errorf("a refused request subscribed")
	}
}

// pprof runs a CPU profile, a trace or a delta profile for at most 30 seconds.
func TestPprofSecondsCapped(t *testing.T) {
	a, _ := testAgent(t)
	srv := httptest.NewServer(a.DebugHandler())
	defer srv.Close()
	for _, path := range []string{"/debug/pprof/profile?seconds=31", "/debug/pprof/trace?seconds=3600",
		"/debug/pprof/heap?seconds=100", "/debug/pprof/goroutine?seconds=1e9", "/debug/pprof/profile?seconds=x",
		"/debug/pprof/profile?seconds=-1", "/debug/pprof/trace?seconds=NaN"} {
		// Refused at once; without the cap the profile would run for as long as asked.
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			t.Errorf("%s: %v, want 400 at once", path, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "at most 30") {
			t.Errorf("%s: %d %q, want 400 saying at most 30", path, resp.StatusCode, b)
		}
	}
	if code, body := do(t, srv, "GET", "/debug/pprof/trace?seconds=0.01", "", nil); code != 200 {
		t.Errorf("a short trace: %d %.80q", code, body)
	}
}

// Neither listener reads a request body: a declared large one is refused before any work.
func TestListenersRefuseBodies(t *testing.T) {
	a, _ := testAgent(t)
	for name, h := range map[string]http.Handler{"metrics": a.MetricsHandler(), "debug": a.DebugHandler()} {
		srv := httptest.NewServer(h)
		path := "/metrics"
		if name == "debug" {
			path = "/debug/explain"
		}
		code, body := do(t, srv, "POST", path, "", strings.NewReader(strings.Repeat("x", 1<<20)))
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "at most 4096") {
			t.Errorf("%s: %d %q, want 413", name, code, body)
		}
		srv.Close()
	}
}

// The metrics listener serves at most listeners.metricsConns connections at once: the next
// waits, unserved, until one closes; an idle keep-alive connection is closed after
// idleTimeout, so idle clients cannot hold the cap; a header over the limit gets 431.
func TestMetricsListenerLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("opens a listener on 127.0.0.1")
	}
	saved := listeners
	t.Cleanup(func() { listeners = saved })
	listeners.metricsConns, listeners.idleTimeout = 2, 2*time.Second
	a, _ := testAgent(t, func(c *Config) { c.MetricsAddr, c.DebugAddr = "127.0.0.1:0", "" })
	servers, err := a.listen()
	if err != nil {
		t.Fatal(err)
	}
	defer servers[0].Close()
	addr := servers[0].Addr

	type conn struct {
		net.Conn
		r *bufio.Reader
	}
	dial := func() *conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &conn{c, bufio.NewReader(c)}
	}
	get := func(c *conn, header string) (*http.Response, error) {
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n%s\r\n", addr, header)
		resp, err := http.ReadResponse(c.r, nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	first, second := dial(), dial()
	for _, c := range []*conn{first, second} {
		if resp, err := get(c, ""); err != nil || resp.StatusCode != 200 {
			t.Fatalf("within the cap: %v %v", resp, err)
		}
	}
	third := dial() // the kernel accepts it; the server does not, yet
	third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if resp, err := get(third, ""); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a third connection over a cap of 2 was served: %v %v", resp, err)
	}
	first.Close()
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(third.r, nil) // its request was sent above
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("once a connection closed: %v %v", resp, err)
	}
	resp.Body.Close()

	// second has been idle since its request: the server closes it.
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := second.r.ReadByte(); err != io.EOF {
		t.Errorf("an idle keep-alive connection: %v, want closed by the server", err)
	}

	big := "X-Big: " + strings.Repeat("a", listeners.metricsHeaderBytes+4096) + "\r\n"
	if resp, err := get(dial(), big); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a %d-byte header: %v %v, want 431", len(big), resp, err)
	}
}
