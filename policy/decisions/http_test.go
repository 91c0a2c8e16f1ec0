package decisions

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/podwall/podwall/policy/flow"
)

// open subscribes to srv's stream; the subscription exists when it returns.
func open(t *testing.T, ctx context.Context, srv *httptest.Server, query, accept string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/debug/decisions"+query, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestHandlerNDJSON(t *testing.T) {
	s := snapshot(t)
	var h Hub
	srv := httptest.NewServer(Handler(&h))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	all := open(t, ctx, srv, "", "")
	dbDenies := open(t, ctx, srv, "?pod=prod/db&verdict=deny&policy=db-policy", "")
	if ct := all.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q", ct)
	}
	if h.Subscribers() != 2 {
		t.Fatalf("subscribers = %d once the headers came, want 2", h.Subscribers())
	}
	h.Publish(record(s, web, api, flow.TCP, 5000))
	h.Publish(record(s, web, db, flow.TCP, 3306))
	h.Publish(record(s, api, db, flow.TCP, 3306))
	h.Publish(record(s, web, api, flow.TCP, 80))

	read := func(resp *http.Response, n int) []Event {
		t.Helper()
		sc := bufio.NewScanner(resp.Body)
		var out []Event
		for len(out) < n && sc.Scan() {
			var e Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			out = append(out, e)
		}
		if len(out) < n {
			t.Fatalf("got %d events, want %d: %v", len(out), n, sc.Err())
		}
		return out
	}
	got := read(all, 4)
	var flows []string
	for _, e := range got {
		flows = append(flows, e.SrcPod+">"+e.DstPod+":"+e.Verdict)
	}
	if want := "prod/web>prod/api:allow prod/web>prod/db:deny prod/api>prod/db:allow prod/web>prod/api:deny"; strings.Join(flows, " ") != want {
		t.Errorf("all: %s, want %s", strings.Join(flows, " "), want)
	}
	e := read(dbDenies, 1)[0]
	if e.SrcPod != "prod/web" || e.DstPod != "prod/db" || e.Verdict != "deny" || e.Policies[0] != "prod/db-policy" {
		t.Errorf("filtered: %+v", e)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for h.Subscribers() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if h.Subscribers() != 0 {
		t.Errorf("subscribers after the clients left = %d", h.Subscribers())
	}
}

// TestHandlerReportsLoss: a subscriber whose buffer overflows is told how many records it
// lost, and decisions plus losses add up to what was published.
func TestHandlerReportsLoss(t *testing.T) {
	s := snapshot(t)
	var h Hub
	srv := httptest.NewServer(Handler(&h))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := open(t, ctx, srv, "?buffer=1", "")
	const n = 5000
	r := record(s, web, db, flow.TCP, 3306)
	for range n {
		h.Publish(r)
	}
	sc := bufio.NewScanner(resp.Body)
	var decisions, lost uint64
	for decisions+lost < n && sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		switch e.Type {
		case TypeDecision:
			decisions++
		case TypeDropped:
			if e.Count == 0 {
				t.Errorf("dropped line with no count: %s", sc.Text())
			}
			lost += e.Count
		}
	}
	if lost == 0 || decisions+lost != n {
		t.Errorf("decisions %d + lost %d, want %d with some lost", decisions, lost, n)
	}
	if _, dropped := h.Totals(); dropped != lost {
		t.Errorf("hub dropped %d, stream reported %d", dropped, lost)
	}
}

func TestHandlerSSE(t *testing.T) {
	s := snapshot(t)
	var h Hub
	srv := httptest.NewServer(Handler(&h))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := open(t, ctx, srv, "?verdict=deny", "text/html, text/event-stream;q=0.9")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	h.Publish(record(s, api, db, flow.TCP, 3306)) // allowed: filtered out
	h.Publish(record(s, web, db, flow.TCP, 3306))
	br := bufio.NewReader(resp.Body)
	var msg []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\n" && len(msg) > 0 && strings.HasPrefix(msg[len(msg)-1], "data:") {
			break
		}
		if line != "\n" {
			msg = append(msg, strings.TrimSuffix(line, "\n"))
		}
	}
	// retry: first, then the one decision.
	if len(msg) != 3 || msg[0] != "retry: 2000" || msg[1] != "event: decision" || !strings.HasPrefix(msg[2], "data: {") {
		t.Fatalf("messages %q", msg)
	}
	var e Event
	if err := json.Unmarshal([]byte(strings.TrimPrefix(msg[2], "data: ")), &e); err != nil || e.SrcPod != "prod/web" || e.Verdict != "deny" {
		t.Errorf("data %q: %v", msg[2], err)
	}
}

func TestHandlerBadRequest(t *testing.T) {
	var h Hub
	srv := httptest.NewServer(Handler(&h))
	defer srv.Close()
	for _, q := range []string{"?verdict=perhaps", "?direction=sideways", "?buffer=-1", "?pod=a/b/c"} {
		resp, err := http.Get(srv.URL + "/debug/decisions" + q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d %s", q, resp.StatusCode, b)
		}
	}
	if h.Subscribers() != 0 {
		t.Errorf("subscribers = %d", h.Subscribers())
	}
}

func TestPage(t *testing.T) {
	srv := httptest.NewServer(Page())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/debug/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Self-contained: the stream relative to the page, nothing from elsewhere.
	for _, want := range []string{"<title>podwall", `new EventSource("decisions"`, `id="pause"`, `id="by-policy"`, `id="by-pair"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"http://", "https://", "src=", "<link", "@import", "innerHTML"} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
}

// A filter longer than the caps is refused with 400 and a message naming the parameter and
// the limit; at the cap it is accepted, and its values still match (one map lookup each).
func TestHandlerFilterCaps(t *testing.T) {
	s := snapshot(t)
	var h Hub
	srv := httptest.NewServer(Handler(&h))
	defer srv.Close()
	values := func(n int, f func(i int) string) string {
		var vs []string
		for i := range n {
			vs = append(vs, f(i))
		}
		return strings.Join(vs, ",")
	}
	for _, tc := range []struct{ query, want string }{
		{"?pod=" + values(MaxFilterValues+1, func(i int) string { return fmt.Sprintf("ns/pod-%d", i) }),
			fmt.Sprintf("filter: pod: %d values, at most %d", MaxFilterValues+1, MaxFilterValues)},
		{"?namespace=a&namespace=" + values(MaxFilterValues, func(i int) string { return fmt.Sprint("ns-", i) }),
			fmt.Sprintf("filter: namespace: %d values, at most %d", MaxFilterValues+1, MaxFilterValues)},
		{"?policy=" + strings.Repeat("p", MaxFilterValueLen+1),
			fmt.Sprintf("bytes, at most %d", MaxFilterValueLen)},
	} {
		c := &http.Client{Timeout: 10 * time.Second} // refused at once; an accepted stream would not end
		resp, err := c.Get(srv.URL + "/debug/decisions" + tc.query)
		if err != nil {
			t.Errorf("%.40s…: %v, want 400 at once", tc.query, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tc.want) {
			t.Errorf("%.40s…: %d %q, want 400 with %q", tc.query, resp.StatusCode, b, tc.want)
		}
	}
	if h.Subscribers() != 0 {
		t.Fatalf("subscribers = %d after refusals", h.Subscribers())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := values(MaxFilterValues-1, func(i int) string { return fmt.Sprintf("ns-%d/pod-%d", i, i) }) + ",prod/db"
	resp := open(t, ctx, srv, "?pod="+full, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a filter at the cap: %d", resp.StatusCode)
	}
	h.Publish(record(s, web, api, flow.TCP, 5000)) // no pod of the filter
	h.Publish(record(s, api, db, flow.TCP, 3306))
	var e Event
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.DstPod != "prod/db" {
		t.Fatalf("first line %+v %v, want the flow to prod/db", e, err)
	}
}
