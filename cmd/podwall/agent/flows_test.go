package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podwall/podwall/policy/flows"
	"github.com/podwall/podwall/policy/manifests"
)

// Every verdict observe sees reaches the flow history (/debug/flows) and the flow log: one
// line per distinct flow, with its connection count, pods, verdict and deciding policy.
func TestFlowsFromObserve(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "flows.log")
	a, _ := testAgent(t, func(c *Config) {
		c.FlowLog, c.FlowLogMaxSize, c.FlowLogMaxFiles, c.FlowLogInterval = logPath, 1<<20, 1, time.Hour
	})
	stop := a.runFlows(context.Background())
	a.observe(a.verdict(apiIP, dbIP, 3306, false))
	a.observe(a.verdict(apiIP, dbIP, 3306, true))
	a.observe(a.verdict(webIP, dbIP, 3306, false))
	stop() // the recorder takes what was offered, writes its last interval and stops

	srv := httptest.NewServer(a.DebugHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/debug/flows")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q", ct)
	}
	check := func(where string, r io.Reader) {
		t.Helper()
		got := map[string]flows.Line{}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var l flows.Line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("%s: %q: %v", where, sc.Text(), err)
			}
			got[l.SrcPod+">"+l.DstPod] = l
		}
		api, web := got["prod/api>prod/db"], got["prod/web>prod/db"]
		if len(got) != 2 || api.Connections != 2 || api.Verdict != "allow" || web.Connections != 1 || web.Verdict != "deny" ||
			!strings.Contains(web.Reason, "db-policy") || len(web.Policies) != 1 || web.Policies[0] != "prod/db-policy" || web.Node != "node-1" {
			t.Errorf("%s: %+v", where, got)
		}
	}
	check("/debug/flows", resp.Body)
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	check("flow log", f)
}

// /debug/state serves the objects of the state in force, which load back as that state.
func TestDebugState(t *testing.T) {
	a, want := testAgent(t)
	srv := httptest.NewServer(a.DebugHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/debug/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	got, err := manifests.Parse("state.yaml", body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %v\n%s", resp.StatusCode, err, body)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("state:\n got %+v\nwant %+v", got, want)
	}
}

// With a staged deny-all in prod, the flow history and the flow log carry the staged
// verdict of each flow beside the enforced one: deny, naming prod/deny-all. Once the staged
// policy is gone, the history keeps the recorded staged deny, with a reason saying its
// policies are no longer held.
func TestFlowsStaged(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "flows.log")
	a, s := testAgent(t, func(c *Config) {
		c.FlowLog, c.FlowLogMaxSize, c.FlowLogMaxFiles, c.FlowLogInterval = logPath, 1<<20, 1, time.Hour
	})
	staged := s
	staged.Policies = append(slices.Clone(s.Policies), stagedDenyAll())
	a.setState(t, staged)
	stop := a.runFlows(context.Background())
	a.observe(a.verdict(webIP, apiIP, 5000, false))
	a.observe(a.verdict(apiIP, dbIP, 3306, false))
	stop()

	lines := func(where string, r io.Reader) map[string]flows.Line {
		t.Helper()
		got := map[string]flows.Line{}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var l flows.Line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("%s: %q: %v", where, sc.Text(), err)
			}
			got[l.SrcPod+">"+l.DstPod] = l
		}
		if len(got) != 2 {
			t.Fatalf("%s: %d flows, want 2: %+v", where, len(got), got)
		}
		return got
	}
	check := func(where string, got map[string]flows.Line) {
		t.Helper()
		for k, l := range got {
			if l.Verdict != "allow" || l.Staged == nil || l.Staged.Verdict != "deny" ||
				!slices.Contains(l.Staged.Policies, "prod/deny-all") || !strings.Contains(l.Staged.Reason, "deny-all") {
				t.Errorf("%s: %s: verdict %q, staged %+v", where, k, l.Verdict, l.Staged)
			}
		}
	}
	debugFlows := func() map[string]flows.Line {
		t.Helper()
		rec := httptest.NewRecorder()
		a.DebugHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://127.0.0.1/debug/flows", nil))
		return lines("/debug/flows", rec.Body)
	}
	check("/debug/flows", debugFlows())
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	check("flow log", lines("flow log", f))

	a.setState(t, s) // the staged policy is withdrawn
	for k, l := range debugFlows() {
		if l.Staged == nil || l.Staged.Verdict != "deny" || !strings.Contains(l.Staged.Reason, "no longer held") {
			t.Errorf("after withdrawing: %s: staged %+v", k, l.Staged)
		}
	}
}

// Without staged policies, flow lines carry no staged verdict.
func TestFlowsNoStaged(t *testing.T) {
	a, _ := testAgent(t)
	stop := a.runFlows(context.Background())
	a.observe(a.verdict(webIP, apiIP, 5000, false))
	stop()
	var buf strings.Builder
	a.flows.WriteTo(&buf)
	if buf.Len() == 0 || strings.Contains(buf.String(), `"staged"`) {
		t.Errorf("%s", buf.String())
	}
}
