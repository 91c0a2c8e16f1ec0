package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy/explain"
)

const example = "../../deploy/examples/3tier"

func runExplain(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newRoot()
	var out, errOut bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"explain"}, args...))
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// The seeds' db-policy: only the API pod reaches the database on TCP 3306.
func TestExplainSingle(t *testing.T) {
	tests := []struct {
		from, to, port, proto string
		verdict               string
		reason                []string // substrings the reason must hold
	}{
		{"prod/api", "prod/db", "3306", "TCP", "allow", []string{"prod/db-policy rule 0"}},
		{"prod/web", "prod/db", "3306", "TCP", "deny", []string{"prod/db is isolated for ingress by db-policy", "no rule allows TCP/3306 from prod/web"}},
		{"prod/api", "prod/db", "3307", "TCP", "deny", []string{"no rule allows TCP/3307 from prod/api"}},
		{"prod/api", "prod/db", "3306", "UDP", "deny", []string{"UDP/3306"}},
		{"192.0.2.10", "prod/db", "3306", "TCP", "deny", []string{"from 192.0.2.10"}},
		{"192.0.2.10", "prod/web", "80", "TCP", "allow", []string{"prod/web is not isolated for ingress"}},
		{"fd00:10:244:1::11", "fd00:10:244:1::12", "3306", "TCP", "allow", []string{"db-policy rule 0"}},
		{"prod/web", "prod/api", "5000", "TCP", "allow", []string{"not isolated"}},
	}
	for _, tt := range tests {
		out, _, err := runExplain(t, "", "--manifests", example, "--from", tt.from, "--to", tt.to, "--port", tt.port, "--protocol", tt.proto, "-o", "json")
		if err != nil {
			t.Fatalf("%s -> %s: %v", tt.from, tt.to, err)
		}
		var r explain.Answer
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out)
		}
		if r.Verdict != tt.verdict {
			t.Errorf("%s -> %s %s/%s: verdict %q, want %q (%s)", tt.from, tt.to, tt.proto, tt.port, r.Verdict, tt.verdict, r.Reason)
		}
		for _, s := range tt.reason {
			if !strings.Contains(r.Reason, s) {
				t.Errorf("%s -> %s %s/%s: reason %q lacks %q", tt.from, tt.to, tt.proto, tt.port, r.Reason, s)
			}
		}
		text, _, err := runExplain(t, "", "--manifests", example, "--from", tt.from, "--to", tt.to, "--port", tt.port, "--protocol", tt.proto)
		if err != nil || !strings.Contains(text, strings.ToUpper(tt.verdict)) || !strings.Contains(text, r.Ingress.Reason) {
			t.Errorf("text output for %s -> %s: err %v\n%s", tt.from, tt.to, err, text)
		}
	}
}

// --batch answers every line with the query's own fields plus verdict and reason, keeps going
// past a bad line, and exits non-zero when there was one.
func TestExplainBatch(t *testing.T) {
	in := `{"from":"prod/api","to":"prod/db","port":3306,"protocol":"TCP"}
{"from":"prod/web","to":"prod/db","port":3306}

{"from":"prod/nosuch","to":"prod/db","port":3306,"protocol":"TCP"}
{"from":"prod/web","to":"prod/db","port":3306,"protocol":"SCTP"}
not json
{"from":"10.244.1.11","to":"fd00:10:244:1::12","port":3306,"protocol":"TCP"}
{"from":"prod/api","to":"prod/db","port":70000,"protocol":"TCP"}
{"from":"prod/api","to":"prod/db","protocol":"ICMP"}
`
	out, stderr, err := runExplain(t, in, "--manifests", example, "--batch", "-o", "json")
	if err == nil {
		t.Errorf("batch with bad lines exited 0")
	}
	type line struct {
		From, To, Protocol, Verdict, Reason, Error string
		Port                                       json.Number
	}
	var got []line
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("bad output line %q: %v", sc.Text(), err)
		}
		got = append(got, l)
	}
	want := []struct{ verdict, errHas string }{
		{"allow", ""}, {"deny", ""}, {"", "no such pod"}, {"deny", ""}, {"", "line 6"},
		{"", "different IP families"}, {"", "port"}, {"deny", ""},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d answers for %d queries:\n%s", len(got), len(want), out)
	}
	for i, w := range want {
		if got[i].Verdict != w.verdict || (w.errHas == "") != (got[i].Error == "") || !strings.Contains(got[i].Error, w.errHas) {
			t.Errorf("answer %d = %+v, want verdict %q error containing %q", i, got[i], w.verdict, w.errHas)
		}
		if w.verdict != "" && got[i].Reason == "" {
			t.Errorf("answer %d has no reason", i)
		}
	}
	if got[0].From != "prod/api" || got[0].To != "prod/db" || got[0].Port != "3306" || got[0].Protocol != "TCP" {
		t.Errorf("answer 0 does not echo the query: %+v", got[0])
	}
	if !strings.Contains(stderr, "no such pod") {
		t.Errorf("stderr lacks the bad query: %q", stderr)
	}
}

// A batch served line by line (a coprocess) gets each answer before sending the next query.
func TestExplainBatchAnswersEachLine(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		cmd := newRoot()
		cmd.SetIn(inR)
		cmd.SetOut(outW)
		cmd.SetErr(io.Discard)
		cmd.SetArgs([]string{"explain", "--manifests", example, "--batch"})
		done <- cmd.Execute()
		outW.Close()
	}()
	rd := bufio.NewReader(outR)
	for _, q := range []string{`{"from":"prod/api","to":"prod/db","port":3306}`, `{"from":"prod/web","to":"prod/db","port":3306}`} {
		if _, err := io.WriteString(inW, q+"\n"); err != nil {
			t.Fatal(err)
		}
		line, err := rd.ReadString('\n') // blocks forever if the answer is buffered
		if err != nil || !strings.Contains(line, `"verdict"`) {
			t.Fatalf("answer to %s: %q, %v", q, line, err)
		}
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestExplainMatrix(t *testing.T) {
	out, _, err := runExplain(t, "", "--manifests", example, "--matrix", "--ports", "3306/TCP,80/TCP")
	if err != nil {
		t.Fatal(err)
	}
	// 3306/TCP: only web -> db is denied (api is allowed, db to itself is allowed).
	if !strings.Contains(out, "TCP/3306") || !strings.Contains(out, "1 of 9 pairs denied") {
		t.Errorf("3306 table wrong:\n%s", out)
	}
	// 80/TCP: web -> db and api -> db are denied.
	if !strings.Contains(out, "TCP/80") || !strings.Contains(out, "2 of 9 pairs denied") {
		t.Errorf("80 table wrong:\n%s", out)
	}
}

// Bad input fails with a clear error. (An invalid object in good files is a warning:
// TestExplainInvalidPolicyFailsClosed.)
func TestExplainBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: broken
   namespace: prod
`), 0o644)
	_, _, err := runExplain(t, "", "--manifests", bad, "--from", "1.2.3.4", "--to", "1.2.3.5", "--port", "80")
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:1") || !strings.Contains(err.Error(), "invalid YAML") {
		t.Errorf("want an error naming the file and line, got %v", err)
	}
	for _, args := range [][]string{
		{"--manifests", example, "--from", "prod/web", "--to", "prod/db"},                                      // TCP needs a port
		{"--manifests", example, "--from", "prod/web", "--to", "prod/db", "--port", "80", "--protocol", "GRE"}, // protocol
		{"--manifests", example, "--from", "web", "--to", "prod/db", "--port", "80"},                           // endpoint
		{"--from", "prod/web", "--to", "prod/db", "--port", "80"},                                              // no source
	} {
		if _, _, err := runExplain(t, "", args...); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
}
