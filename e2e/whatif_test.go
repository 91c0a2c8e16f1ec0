package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/podwall/podwall/cmd/podwall/lab"
	"github.com/podwall/podwall/policy/flows"
	"github.com/podwall/podwall/policy/manifests"
	"github.com/podwall/podwall/policy/policytest"
	"github.com/podwall/podwall/policy/whatif"
)

// TestWhatIf records the 3-tier probes (api → db three times) in the agent's flow history and
// flow log, then asks `podwall what-if` about an egress lockdown of api that forgets the
// database: through the agent (--addr) and offline on the saved flow log (--flows), it lists
// exactly api → db TCP/3306 (one flow per family, 3 connections each), newly denied by the
// proposal, and exits 3; a proposal that changes no verdict exits 0. Enforcing the proposal
// then denies exactly what what-if said.
func TestWhatIf(t *testing.T) {
	flowLog := filepath.Join(t.TempDir(), "flows.log")
	e := threeTierEnv(t, "--flow-log", flowLog, "--flow-log-interval", "100ms")
	e.check(threeTierProbes...)
	apiToDB := probe{from: "prod/api", to: "prod/db", port: 3306, allow: true}
	e.check(apiToDB, apiToDB) // three connections per family in all

	// The history: every probe to db (the only isolated pod), api → db with 3 connections.
	history := func() map[queuedFlow]flows.Line {
		_, body, err := e.Agents["node-1"].Get(context.Background(), "/debug/flows")
		if err != nil {
			e.T.Fatal(err)
		}
		return flowLines(e.T, body)
	}
	want := map[queuedFlow]uint64{}
	for _, fam := range []string{"IPv4", "IPv6"} {
		want[e.flowOf(fam, apiToDB)] = 3
	}
	var got map[queuedFlow]flows.Line
	e.waitFor(func() bool {
		got = history()
		return got[e.flowOf("IPv4", apiToDB)].Connections == 3 && got[e.flowOf("IPv6", apiToDB)].Connections == 3
	}, func() string { return fmt.Sprintf("/debug/flows: %v", got) })
	for _, pr := range threeTierProbes {
		if pr.to != "prod/db" {
			continue
		}
		for _, fam := range []string{"IPv4", "IPv6"} {
			l, ok := got[e.flowOf(fam, pr)]
			if !ok || l.DstPod != "prod/db" || l.Verdict != map[bool]string{true: "allow", false: "deny"}[pr.allow] ||
				!slices.Contains(l.Policies, "prod/db-policy") {
				t.Errorf("/debug/flows %s %v: %+v (present %v)", fam, pr, l, ok)
			}
		}
	}

	// The proposals: api may only resolve names (UDP 53), which closes api → db; web isolated
	// for ingress but open to all, which changes no verdict.
	closing := policytest.NetworkPolicy("prod", "api-egress", policytest.Selector("role", "api"),
		policytest.Egress(policytest.To(policytest.Port("53/UDP"))))
	proposal, harmless := filepath.Join(t.TempDir(), "api-egress.yaml"), filepath.Join(t.TempDir(), "web-open.yaml")
	if err := manifests.Write(proposal, closing); err != nil {
		t.Fatal(err)
	}
	if err := manifests.Write(harmless, policytest.NetworkPolicy("prod", "web-open", policytest.Selector("role", "web"),
		policytest.Ingress(policytest.From()))); err != nil {
		t.Fatal(err)
	}
	checkChanges := func(how string, out string) {
		t.Helper()
		changed := map[queuedFlow]uint64{}
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var l whatif.Line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("%s: %q: %v", how, sc.Text(), err)
			}
			if l.Change != whatif.NewlyDenied || fmt.Sprint(l.Policies) != "[prod/api-egress]" || l.SrcPod != "prod/api" ||
				!strings.Contains(l.Reason, "isolated for egress by api-egress") {
				t.Errorf("%s: change %s", how, sc.Text())
			}
			changed[queuedFlow{l.Family, l.Src, l.Dst, l.Protocol, l.DstPort}] = l.Connections
		}
		if fmt.Sprint(changed) != fmt.Sprint(want) {
			t.Errorf("%s: changes %v, want %v\n%s", how, changed, want, out)
		}
	}

	// Through the agent's debug listener: its flows and the state it enforces.
	out, code := e.whatif("node-1", "--proposed", proposal, "--addr", "127.0.0.1:9091", "-o", "json")
	if code != 3 {
		t.Errorf("what-if --addr closing api → db: exit %d, want 3\n%s", code, out)
	}
	checkChanges("--addr", out)
	out, code = e.whatif("node-1", "--proposed", harmless, "--addr", "127.0.0.1:9091")
	if code != 0 || !strings.Contains(out, "No verdict would change") {
		t.Errorf("what-if --addr with a harmless proposal: exit %d, want 0\n%s", code, out)
	}

	// Offline, on the flow log the agent wrote (every interval of it).
	e.waitFor(func() bool {
		data, _ := os.ReadFile(flowLog)
		n := flowLogSums(e.T, data)
		return n[e.flowOf("IPv4", apiToDB)] == 3 && n[e.flowOf("IPv6", apiToDB)] == 3
	}, func() string { data, _ := os.ReadFile(flowLog); return "flow log:\n" + string(data) })
	out, code = e.whatif("node-1", "--proposed", proposal, "--flows", flowLog, "--manifests", e.manifests, "-o", "json")
	if code != 3 {
		t.Errorf("what-if --flows closing api → db: exit %d, want 3\n%s", code, out)
	}
	checkChanges("--flows", out)

	// Enforced, the proposal denies what what-if listed.
	e.rewrite(
		policytest.Namespace("prod", nil),
		e.podObject("prod/web", map[string]string{"role": "web"}),
		e.podObject("prod/api", map[string]string{"role": "api", "name": "api-pod"}),
		e.podObject("prod/db", map[string]string{"role": "db"}),
		lab.DBPolicy("prod"), closing,
	)
	e.check(probe{from: "prod/api", to: "prod/db", port: 3306, allow: false})
}

// whatif runs `podwall what-if` in node's namespace and returns its output and exit status.
func (e *env) whatif(node string, args ...string) (string, int) {
	e.T.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", e.Nodes[node].Name(), binary, "what-if"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		if exit.ExitCode() != 3 {
			e.T.Logf("what-if %v: %s", args, stderr.String())
		}
		return string(out), exit.ExitCode()
	case err != nil:
		e.T.Fatal(err)
	}
	return string(out), 0
}

func flowLines(t *testing.T, body string) map[queuedFlow]flows.Line {
	t.Helper()
	out := map[queuedFlow]flows.Line{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		var l flows.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		out[queuedFlow{l.Family, l.Src, l.Dst, l.Protocol, l.DstPort}] = l
	}
	return out
}

// flowLogSums sums the connections of each flow over the intervals of a flow log.
func flowLogSums(t *testing.T, data []byte) map[queuedFlow]uint64 {
	t.Helper()
	sums := map[queuedFlow]uint64{}
	for line := range bytes.Lines(completeLines(data)) {
		var l flows.Line
		if err := json.Unmarshal(line, &l); err != nil {
			t.Fatalf("flow log line %q: %v", line, err)
		}
		sums[queuedFlow{l.Family, l.Src, l.Dst, l.Protocol, l.DstPort}] += l.Connections
	}
	return sums
}

// completeLines cuts what follows the last newline: a line the agent is writing right now.
func completeLines(data []byte) []byte {
	return data[:bytes.LastIndexByte(data, '\n')+1]
}
