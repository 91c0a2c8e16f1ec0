package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/whatif"
)

// The 3-tier probes as recorded: web → api (4 connections), api → db (3, over two flow log
// intervals), web → db (denied, one `podwall tail -o json` line).
const recordedFlows = `{"type":"flow","node":"node-1","family":"IPv4","protocol":"TCP","src":"10.244.1.10","dst":"10.244.1.11","dstPort":5000,"first":"2026-12-03T10:00:00Z","last":"2026-12-03T10:00:05Z","connections":4,"verdict":"allow","reason":"x","generation":1}
{"type":"flow","node":"node-1","family":"IPv4","protocol":"TCP","src":"10.244.1.11","dst":"10.244.1.12","dstPort":3306,"first":"2026-12-03T10:00:00Z","last":"2026-12-03T10:00:09Z","connections":2,"verdict":"allow","reason":"x","generation":1}
{"type":"flow","node":"node-1","family":"IPv4","protocol":"TCP","src":"10.244.1.11","dst":"10.244.1.12","dstPort":3306,"first":"2026-12-03T10:00:10Z","last":"2026-12-03T10:00:19Z","connections":1,"verdict":"allow","reason":"x","generation":1}
{"type":"decision","time":"2026-12-03T10:00:20Z","node":"node-1","family":"IPv4","protocol":"TCP","src":"10.244.1.10","srcPort":40000,"dst":"10.244.1.12","dstPort":3306,"verdict":"deny","reason":"x","cacheHit":false,"latencyNs":1,"queue":0,"generation":1}
`

const (
	closesAPIToDB = "../../policy/whatif/testdata/api-egress.yaml"
	changesNone   = "../../policy/whatif/testdata/web-open.yaml"
)

func runWhatif(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	cmd := newRoot()
	var out, errOut bytes.Buffer
	cmd.SetIn(strings.NewReader(""))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"what-if"}, args...))
	err = cmd.Execute()
	return out.String(), err
}

func flowsFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flows.log")
	if err := os.WriteFile(path, []byte(recordedFlows), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	var st exitStatus
	switch {
	case status == 0 && err != nil:
		t.Fatalf("error %v, want exit status 0", err)
	case status != 0 && (!errors.As(err, &st) || int(st) != status):
		t.Fatalf("error %v, want exit status %d", err, status)
	}
}

// A proposal that closes api → db lists exactly that flow with its count, and exits 3.
func TestWhatifFlowsNewlyDenied(t *testing.T) {
	out, err := runWhatif(t, "--proposed", closesAPIToDB, "--flows", flowsFile(t), "--manifests", example)
	wantStatus(t, err, exitNewlyDenied)
	for _, want := range []string{"1 of 3 recorded flows would change: 1 newly denied",
		"Newly denied by prod/api-egress: 1 flow, 3 connections",
		"prod/api (10.244.1.11) -> prod/db (10.244.1.12) TCP/3306  3 connections",
		"no rule allows TCP/3306 to prod/db"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = runWhatif(t, "--proposed", closesAPIToDB, "--flows", flowsFile(t), "--manifests", example, "-o", "json")
	wantStatus(t, err, exitNewlyDenied)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var l whatif.Line
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &l) != nil || l.Change != "newly-denied" || l.SrcPod != "prod/api" ||
		l.DstPod != "prod/db" || l.Connections != 3 || fmt.Sprint(l.Policies) != "[prod/api-egress]" {
		t.Errorf("json:\n%s", out)
	}
}

// A proposed ClusterNetworkPolicy is judged with the tiers: an Admin Deny closes api → db,
// which the namespace's own policy allows, and is named as responsible; deleting it again
// (cnp/NAME, as decisions name it) reopens the flow.
func TestWhatifClusterNetworkPolicy(t *testing.T) {
	out, err := runWhatif(t, "--proposed", "../../policy/whatif/testdata/cnp-protect-db.yaml", "--flows", flowsFile(t), "--manifests", example)
	wantStatus(t, err, exitNewlyDenied)
	if !strings.Contains(out, "Newly denied by cnp/protect-db: 1 flow, 3 connections") {
		t.Errorf("output:\n%s", out)
	}
	dir := t.TempDir()
	for _, f := range []string{example + "/cluster.yaml", example + "/db-policy.yaml", "../../policy/whatif/testdata/cnp-protect-db.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644)
	}
	out, err = runWhatif(t, "--delete", "cnp/protect-db", "--flows", flowsFile(t), "--manifests", dir)
	wantStatus(t, err, 0)
	if !strings.Contains(out, "1 of 3 recorded flows would change: 0 newly denied, 1 newly allowed") ||
		!strings.Contains(out, "prod/api (10.244.1.11) -> prod/db (10.244.1.12) TCP/3306  3 connections") {
		t.Errorf("deleting the ClusterNetworkPolicy:\n%s", out)
	}
}

// A proposal holding an object the agent would reject alone is refused, naming it.
func TestWhatifRefusesInvalidProposal(t *testing.T) {
	_, err := runWhatif(t, "--proposed", "../../policy/whatif/testdata/invalid-policy.yaml", "--flows", flowsFile(t), "--manifests", example)
	var st exitStatus
	if err == nil || errors.As(err, &st) || !strings.Contains(err.Error(), "prod/bad") || !strings.Contains(err.Error(), "010.0.0.0/8") {
		t.Errorf("%v, want an error naming prod/bad and its CIDR", err)
	}
}

// The rotated files of a flow log are read together: their connections add up.
func TestWhatifFlowsRotated(t *testing.T) {
	lines := strings.SplitAfter(recordedFlows, "\n")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "flows.log.1"), []byte(lines[0]+lines[1]), 0o644) // api → db: 2
	os.WriteFile(filepath.Join(dir, "flows.log"), []byte(lines[2]+lines[3]), 0o644)   // api → db: 1
	out, err := runWhatif(t, "--proposed", closesAPIToDB, "--flows", filepath.Join(dir, "flows.log.1"),
		"--flows", filepath.Join(dir, "flows.log"), "--manifests", example)
	wantStatus(t, err, exitNewlyDenied)
	if !strings.Contains(out, "Newly denied by prod/api-egress: 1 flow, 3 connections") {
		t.Errorf("output:\n%s", out)
	}
}

// A proposal that changes no verdict exits 0; so does one that only allows more.
func TestWhatifNothingNewlyDenied(t *testing.T) {
	out, err := runWhatif(t, "--proposed", changesNone, "--flows", flowsFile(t), "--manifests", example)
	wantStatus(t, err, 0)
	if !strings.Contains(out, "No verdict would change: 3 recorded flows re-judged") {
		t.Errorf("output:\n%s", out)
	}
	out, err = runWhatif(t, "--delete", "NetworkPolicy/prod/db-policy", "--flows", flowsFile(t), "--manifests", example)
	wantStatus(t, err, 0)
	if !strings.Contains(out, "Newly allowed by prod/db-policy: 1 flow, 1 connection") {
		t.Errorf("output:\n%s", out)
	}
}

// fakeAgent serves what an agent's debug listener serves to what-if: /debug/flows and
// /debug/state.
func fakeAgent(t *testing.T, flows string) string {
	t.Helper()
	state, err := manifests.Load(example)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/flows", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(flows)) })
	mux.HandleFunc("GET /debug/state", func(w http.ResponseWriter, _ *http.Request) {
		manifests.EncodeList(w, manifests.Objects(state)...)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// --addr takes the flows and the state in force from the agents; the same connections seen
// by two agents count once.
func TestWhatifAddr(t *testing.T) {
	a1 := fakeAgent(t, recordedFlows)
	a2 := fakeAgent(t, strings.ReplaceAll(recordedFlows, "node-1", "node-2"))
	out, err := runWhatif(t, "--proposed", closesAPIToDB, "--addr", a1, "--addr", a2, "-o", "json")
	wantStatus(t, err, exitNewlyDenied)
	var l whatif.Line
	if json.Unmarshal([]byte(out), &l) != nil || l.Connections != 3 || fmt.Sprint(l.Nodes) != "[node-1 node-2]" {
		t.Errorf("json:\n%s", out)
	}
}

// --kubeconfig reads every running agent pod's /debug/flows through the API server's pod
// proxy (here a stand-in API server answering the two requests that takes; against a real
// one with two agents: e2e/kube TestWhatIfThroughPodProxy).
func TestWhatifKubeconfigPodProxy(t *testing.T) {
	var proxied []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/podwall-system/pods", func(w http.ResponseWriter, r *http.Request) {
		if sel := r.URL.Query().Get("labelSelector"); sel != "app.kubernetes.io/name=podwall" {
			http.Error(w, "selector "+sel, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","items":[
 {"metadata":{"name":"podwall-a","namespace":"podwall-system"},"spec":{"nodeName":"node-1"},"status":{"phase":"Running"}},
 {"metadata":{"name":"podwall-b","namespace":"podwall-system"},"spec":{"nodeName":"node-2"},"status":{"phase":"Pending"}}]}`)
	})
	mux.HandleFunc("GET /api/v1/namespaces/podwall-system/pods/{pod}/proxy/debug/flows", func(w http.ResponseWriter, r *http.Request) {
		proxied = append(proxied, r.PathValue("pod"))
		fmt.Fprint(w, recordedFlows)
	})
	api := httptest.NewServer(mux)
	defer api.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, api.URL)), 0o600)
	out, err := runWhatif(t, "--proposed", closesAPIToDB, "--kubeconfig", kubeconfig, "--manifests", example)
	wantStatus(t, err, exitNewlyDenied)
	if fmt.Sprint(proxied) != "[http:podwall-a:9091]" || !strings.Contains(out, "Newly denied by prod/api-egress: 1 flow, 3 connections") {
		t.Errorf("proxied %v, output:\n%s", proxied, out)
	}
}

// Bad input fails with exit status 1 and an error naming the problem.
func TestWhatifBadInput(t *testing.T) {
	flows := flowsFile(t)
	bad := filepath.Join(t.TempDir(), "bad.log")
	os.WriteFile(bad, []byte(recordedFlows+"{\"type\":\"flow\",\"src\":\"nope\"}\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--flows", flows, "--manifests", example}, "no change"},
		{[]string{"--proposed", changesNone, "--manifests", example}, "exactly one flow source"},
		{[]string{"--proposed", changesNone, "--flows", flows, "--addr", "x:1", "--manifests", example}, "exactly one flow source"},
		{[]string{"--proposed", changesNone, "--flows", flows}, "--flows needs --manifests"},
		{[]string{"--delete", "Deployment/prod/x", "--flows", flows, "--manifests", example}, `unknown kind "Deployment"`},
		{[]string{"--delete", "NetworkPolicy/prod/nope", "--flows", flows, "--manifests", example}, "NetworkPolicy/prod/nope: no such object"},
		{[]string{"--proposed", "nope.yaml", "--flows", flows, "--manifests", example}, "--proposed"},
		{[]string{"--proposed", changesNone, "--flows", bad, "--manifests", example}, "bad.log:5: src"},
		{[]string{"--proposed", changesNone, "--flows", flows, "--manifests", example, "-o", "yaml"}, "--output"},
		{[]string{"--proposed", changesNone, "--addr", "ftp://x"}, "--addr"},
	} {
		_, err := runWhatif(t, tc.args...)
		var st exitStatus
		if err == nil || errors.As(err, &st) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
