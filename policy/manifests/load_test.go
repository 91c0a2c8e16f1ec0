package manifests

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/flow"
)

// writeFiles creates files (path relative to dir → content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mustLoad(t *testing.T, path string) policy.State {
	t.Helper()
	st, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	return st
}

func podKeys(st policy.State) []string {
	var keys []string
	for i := range st.Pods {
		keys = append(keys, st.Pods[i].Key())
	}
	return keys
}

func policyKeys(st policy.State) []string {
	var keys []string
	for _, np := range st.Policies {
		keys = append(keys, np.Namespace+"/"+np.Name)
	}
	return keys
}

func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		// Multi-document YAML, with a leading separator, an empty and a comment-only document.
		"00-namespaces.yaml": `---
apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels:
    team: a
---
---
# nothing here
--- # a comment after the separator
apiVersion: v1
kind: Namespace
metadata: {name: dev}
`,
		// JSON: a v1 List of Pods, one without a namespace.
		"10-pods.json": `{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Pod",
   "metadata": {"namespace": "prod", "name": "web", "labels": {"app": "web"}},
   "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
   "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00:10:244::5"}]}},
  {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tool"}, "spec": {"containers": [{"name": "c"}]},
   "status": {"podIP": "10.244.0.6"}}
]}`,
		// A typed list whose items omit apiVersion and kind, as kubectl may write them.
		"30-policies.yaml": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicyList
items:
- metadata: {namespace: prod, name: deny-all}
  spec: {podSelector: {}}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {namespace: prod, name: allow-web}
  spec:
    podSelector: {matchLabels: {app: web}}
    ingress:
    - ports: [{port: http}]
`,
		// Subdirectories are read after the files sorting before them.
		"sub/nodes.yml": `apiVersion: v1
kind: NodeList
items:
- metadata: {name: n1}
  status:
    addresses:
    - {type: Hostname, address: n1}
    - {type: InternalIP, address: 172.18.0.2}
`,
		"sub/policy.yaml": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
`,
		// Not read: hidden, other extensions, hidden directories.
		".hidden.yaml":         "not: [valid",
		"README.md":            "# notes",
		".git/config.yaml":     "not: [valid",
		"sub/.policy.yaml.swp": "binary",
	})

	st := mustLoad(t, dir)

	wantNS := []policy.Namespace{
		{Name: "prod", Labels: map[string]string{"team": "a", "kubernetes.io/metadata.name": "prod"}},
		{Name: "dev", Labels: map[string]string{"kubernetes.io/metadata.name": "dev"}},
	}
	if !reflect.DeepEqual(st.Namespaces, wantNS) {
		t.Errorf("Namespaces = %+v, want %+v", st.Namespaces, wantNS)
	}
	if got, want := podKeys(st), []string{"prod/web", "default/tool"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Pods = %v, want %v", got, want)
	}
	web := st.Pods[0]
	wantWeb := policy.Pod{
		Namespace: "prod", Name: "web", Labels: map[string]string{"app": "web"},
		IPs:   []netip.Addr{netip.MustParseAddr("10.244.0.5"), netip.MustParseAddr("fd00:10:244::5")},
		Ports: []policy.NamedPort{{Name: "http", Proto: flow.TCP, Port: 8080}},
		Node:  "n1", Phase: "Running",
	}
	if !reflect.DeepEqual(web, wantWeb) {
		t.Errorf("Pods[0] = %+v, want %+v", web, wantWeb)
	}
	if got, want := policyKeys(st), []string{"prod/deny-all", "prod/allow-web", "default/default-deny"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Policies = %v, want %v", got, want)
	}
	wantNodes := []policy.Node{{Name: "n1", IPs: []netip.Addr{netip.MustParseAddr("172.18.0.2")}}}
	if !reflect.DeepEqual(st.Nodes, wantNodes) {
		t.Errorf("Nodes = %+v, want %+v", st.Nodes, wantNodes)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	// A file named explicitly is read whatever its extension; JSON values may follow each other.
	writeFiles(t, dir, map[string]string{
		"state.json": `{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}`,
		"state.txt":  "apiVersion: v1\r\nkind: Namespace\r\nmetadata: {name: c}\r\n---\r\napiVersion: v1\r\nkind: Namespace\r\nmetadata: {name: d}\r\n",
		"other.yaml": "not: [valid",
	})
	for file, want := range map[string][]string{"state.json": {"a", "b"}, "state.txt": {"c", "d"}} {
		st := mustLoad(t, filepath.Join(dir, file))
		var got []string
		for _, n := range st.Namespaces {
			got = append(got, n.Name)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Load(%s) namespaces = %v, want %v", file, got, want)
		}
	}
}

func TestLoadEmpty(t *testing.T) {
	dir := t.TempDir()
	if st := mustLoad(t, dir); !reflect.DeepEqual(st, policy.State{}) {
		t.Errorf("empty directory: %+v, want an empty state", st)
	}
	writeFiles(t, dir, map[string]string{"empty.yaml": "", "comments.yaml": "# nothing\n---\n", "notes.txt": "x"})
	if st := mustLoad(t, dir); !reflect.DeepEqual(st, policy.State{}) {
		t.Errorf("empty files: %+v, want an empty state", st)
	}
}

// TestLoadAllowed: states a cluster can hold are not mistaken for conflicts.
func TestLoadAllowed(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"pods.yaml": `
# hostNetwork pods share their node's address.
apiVersion: v1
kind: Pod
metadata: {name: agent-1, namespace: kube-system}
spec: {hostNetwork: true, containers: [{name: c}]}
status: {podIP: 172.18.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: agent-2, namespace: kube-system}
spec: {hostNetwork: true, containers: [{name: c}]}
status: {podIP: 172.18.0.2}
---
# A finished pod has given its address back.
apiVersion: v1
kind: Pod
metadata: {name: job}
spec: {containers: [{name: c}]}
status: {phase: Succeeded, podIP: 10.244.0.9}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec: {containers: [{name: c}]}
status: {phase: Running, podIP: 10.244.0.9}
---
# Same name, other kind or namespace: not a duplicate.
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod}
spec: {containers: [{name: c}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web}
spec: {podSelector: {}}
---
apiVersion: v1
kind: Namespace
metadata: {name: web}
`})
	st := mustLoad(t, dir)
	if len(st.Pods) != 5 || len(st.Policies) != 1 || len(st.Namespaces) != 1 {
		t.Errorf("got %d pods, %d policies, %d namespaces; want 5, 1, 1", len(st.Pods), len(st.Policies), len(st.Namespaces))
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  [][]string // per problem, in order: substrings its message must contain
	}{
		{
			name: "broken YAML names the line in the file",
			files: map[string]string{"bad.yaml": `apiVersion: v1
kind: Namespace
metadata: {name: a}
---

apiVersion: v1
kind: Pod
metadata:
  name: web
   namespace: prod
`},
			want: [][]string{{"bad.yaml:6: document 2: invalid YAML", "line 10"}},
		},
		{
			name:  "duplicate YAML key",
			files: map[string]string{"dup.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nkind: Pod\n"},
			want:  [][]string{{"dup.yaml:1: document 1: invalid YAML: yaml: unmarshal errors: line 4: key \"kind\" already set"}},
		},
		{
			name:  "broken JSON names the line",
			files: map[string]string{"bad.json": "{\"apiVersion\": \"v1\",\n \"kind\": \"Namespace\",\n \"metadata\": {\"name\": \"a\"},,\n}"},
			want:  [][]string{{"bad.json:3: document 1: invalid JSON", "invalid character ','"}},
		},
		{
			name:  "content after separator",
			files: map[string]string{"sep.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n--- {kind: Pod}\n"},
			want:  [][]string{{"sep.yaml:4: content after a document separator"}},
		},
		{
			name:  "not an object",
			files: map[string]string{"list.yaml": "- a\n- b\n"},
			want:  [][]string{{"list.yaml:1: document 1: not a Kubernetes object"}},
		},
		{
			name:  "missing kind",
			files: map[string]string{"a.yaml": "apiVersion: v1\nmetadata: {name: x}\n"},
			want:  [][]string{{"a.yaml:1: object x: kind: Required value"}},
		},
		{
			name: "unknown kind",
			files: map[string]string{"a.yaml": `# a deployment
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: prod}
`},
			want: [][]string{{"a.yaml:2: Deployment prod/web", `kind: Unsupported value: "Deployment" (apiVersion "apps/v1")`}},
		},
		{
			name: "unknown apiVersion",
			files: map[string]string{"np.yaml": `apiVersion: networking.k8s.io/v1beta1
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec: {podSelector: {}}
`},
			want: [][]string{{"np.yaml:1: NetworkPolicy prod/db", `apiVersion: Unsupported value: "networking.k8s.io/v1beta1"`, `"networking.k8s.io/v1"`}},
		},
		{
			name:  "missing apiVersion",
			files: map[string]string{"ns.yaml": "kind: Namespace\nmetadata: {name: a}\n"},
			want:  [][]string{{"ns.yaml:1: Namespace a", `apiVersion: Required value: kind Namespace is read as apiVersion "v1"`}},
		},
		{
			name:  "policy without a name",
			files: map[string]string{"np.yaml": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: {podSelector: {}}\n"},
			want:  [][]string{{"np.yaml:1: document 1 (NetworkPolicy)", "metadata.name: Required value"}},
		},
		{
			name: "duplicate objects name both places",
			files: map[string]string{
				"a.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c}]}\n",
				"b/c.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n" +
					"apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: default}\nspec: {containers: [{name: c}]}\n",
			},
			want: [][]string{{"c.yaml:5: Pod default/web", "defined twice", "a.yaml:1"}},
		},
		{
			name: "list items",
			files: map[string]string{"list.yaml": `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: good}
- apiVersion: v1
  kind: Pod
  spec: {containers: [{name: c}]}
- {apiVersion: v1, kind: PodList, items: []}
- apiVersion: v1
  kind: Pod
  metadata: {name: bad-ip}
  status: {podIP: nope}
`},
			want: [][]string{
				{"list.yaml:1: document 1 items[1] (Pod)", "metadata.name: Required value"},
				{"list.yaml:1: document 1 items[2] (PodList)", "a list inside a list"},
				{"list.yaml:1: Pod default/bad-ip", `status.podIP: Invalid value: "nope"`},
			},
		},
		{
			name: "typed list holding another kind",
			files: map[string]string{"pods.yaml": `apiVersion: v1
kind: PodList
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: x}}
`},
			want: [][]string{{"pods.yaml:1: Namespace x", `kind: Invalid value: "Namespace": a PodList holds only Pod objects`}},
		},
		{
			name:  "unknown field of a list",
			files: map[string]string{"l.json": `{"apiVersion": "v1", "kind": "List", "itemz": []}`},
			want:  [][]string{{"l.json:1: document 1 (List)", `unknown field "itemz"`}},
		},
		{
			name: "problems of several files, in order",
			files: map[string]string{
				"1.yaml":     "kind: Pod\napiVersion: v2\nmetadata: {name: a}\n",
				"2/ok.yaml":  "apiVersion: v1\nkind: Namespace\nmetadata: {name: fine}\n",
				"2/bad.json": `{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {"finalizer": []}}`,
			},
			want: [][]string{
				{"1.yaml:1: Pod default/a", `apiVersion: Unsupported value: "v2"`},
				{filepath.Join("2", "bad.json") + ":1: Namespace x", `unknown field "spec.finalizer"`},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			st, err := Load(dir)
			if err == nil {
				t.Fatalf("Load succeeded, want an error; state %+v", st)
			}
			if !reflect.DeepEqual(st, policy.State{}) {
				t.Errorf("Load returned a state with its error: %+v", st)
			}
			problems := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				problems = j.Unwrap()
			}
			if len(problems) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(problems), len(tc.want), err)
			}
			for i, want := range tc.want {
				msg := problems[i].Error()
				if !strings.HasPrefix(msg, dir) {
					t.Errorf("problem %d does not start with the file's path %s: %q", i, dir, msg)
				}
				for _, w := range want {
					if !strings.Contains(msg, w) {
						t.Errorf("problem %d: %q does not contain %q", i, msg, w)
					}
				}
			}
		})
	}
}

// An invalid object with a name is rejected alone: Load succeeds, the object is named in
// State.Problems with file:line and every field at fault, and the file's other objects
// apply. A rejected policy stays in the state (the compiler enforces it fail-closed), a
// rejected pod holds no address, a rejected namespace is left out, a node keeps the
// addresses that parse.
func TestLoadRejectsObjectsAlone(t *testing.T) {
	const good = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: good, namespace: prod}\nstatus: {podIP: 10.244.0.9}\n"
	for _, tc := range []struct {
		name  string
		file  string
		want  []string // substrings of the one problem
		check func(t *testing.T, st policy.State)
	}{
		{
			name: "unknown fields, all of them",
			file: `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod}
spec:
  containers:
  - name: c
    portz: []
  nodname: n1
status: {podIP: 10.244.0.5}
`,
			want: []string{"f.yaml:1: Pod prod/web", `unknown field "spec.containers[0].portz"`, `unknown field "spec.nodname"`, "holds no address"},
			check: func(t *testing.T, st policy.State) {
				if p := pod(st, "prod/web"); p == nil || len(p.IPs) != 0 {
					t.Errorf("rejected pod: %+v, want it without an address", p)
				}
			},
		},
		{
			name: "unknown field in a policy, which is then still validated",
			file: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  podselector: {}
  ingress:
  - from: [{}]
`,
			want: []string{"f.yaml:1: NetworkPolicy prod/db", `unknown field "spec.podselector"`, "spec.ingress[0].from[0]: Required value", "fail-closed"},
			check: func(t *testing.T, st policy.State) {
				if !slices.Contains(policyKeys(st), "prod/db") {
					t.Errorf("policies %v: want the rejected prod/db kept for the compiler", policyKeys(st))
				}
			},
		},
		{
			name: "a policy of the wrong type is all namespace, both ways",
			file: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: prod}\nspec: {ingress: oops}\n",
			want: []string{"f.yaml:1: NetworkPolicy prod/db", "spec.ingress"},
			check: func(t *testing.T, st policy.State) {
				np := st.Policies[0]
				if np.Name != "db" || len(np.Spec.PodSelector.MatchLabels)+len(np.Spec.PodSelector.MatchExpressions) != 0 || len(np.Spec.PolicyTypes) != 2 {
					t.Errorf("undecodable policy kept as %+v, want an empty selector and both policyTypes", np)
				}
			},
		},
		{
			name: "wrong type",
			file: "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: oops}\n",
			want: []string{"f.yaml:1: Pod default/web", "spec.containers"},
		},
		{
			name: "invalid policy, every problem",
			file: `apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/33}
    ports:
    - {protocol: ICMP}
`,
			want: []string{"f.yaml:5: NetworkPolicy prod/db", `spec.ingress[0].ports[0].protocol: Unsupported value: "ICMP"`,
				`spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33"`},
		},
		{
			name: "bad namespace name",
			file: "apiVersion: v1\nkind: Namespace\nmetadata: {name: Prod}\n",
			want: []string{"f.yaml:1: Namespace Prod", `metadata.name: Invalid value: "Prod"`, "match no namespaceSelector"},
			check: func(t *testing.T, st policy.State) {
				if len(st.Namespaces) != 0 {
					t.Errorf("namespaces %+v: want the rejected one left out", st.Namespaces)
				}
			},
		},
		{
			name: "bad pod IP",
			file: `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod}
spec: {containers: [{name: c}]}
status:
  podIP: 10.0.0.1
  podIPs: [{ip: 10.0.0.1}, {ip: "fd00::zz"}]
`,
			want: []string{"f.yaml:1: Pod prod/web", `status.podIPs[1]: Invalid value: "fd00::zz"`},
			check: func(t *testing.T, st policy.State) {
				if p := pod(st, "prod/web"); p == nil || len(p.IPs) != 0 {
					t.Errorf("pod with a bad address: %+v, want it without any", p)
				}
			},
		},
		{
			name: "bad node address",
			file: `apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 172.18.0.300}, {type: InternalIP, address: 172.18.0.3}]}
`,
			want: []string{"f.yaml:1: Node n1", `status.addresses[0].address: Invalid value: "172.18.0.300"`},
			check: func(t *testing.T, st policy.State) {
				if len(st.Nodes) != 1 || len(st.Nodes[0].IPs) != 1 || st.Nodes[0].IPs[0] != netip.MustParseAddr("172.18.0.3") {
					t.Errorf("nodes %+v: want n1 with its good address", st.Nodes)
				}
			},
		},
		{
			name: "bad node pod range",
			file: `apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDRs: [10.244.1.0/24, 10.244.2.0/33]}
`,
			want: []string{"f.yaml:1: Node n1", `spec.podCIDRs[1]: Invalid value: "10.244.2.0/33"`},
			check: func(t *testing.T, st policy.State) {
				if len(st.Nodes) != 1 || len(st.Nodes[0].PodCIDRs) != 1 || st.Nodes[0].PodCIDRs[0] != netip.MustParsePrefix("10.244.1.0/24") {
					t.Errorf("nodes %+v: want n1 with its good pod range", st.Nodes)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"f.yaml": tc.file + good})
			st := mustLoad(t, dir)
			if len(st.Problems) != 1 {
				t.Fatalf("problems %v, want 1", st.Problems)
			}
			msg := st.Problems[0].String()
			if !strings.HasPrefix(msg, dir) {
				t.Errorf("problem does not start with the file's path %s: %q", dir, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("problem %q does not contain %q", msg, w)
				}
			}
			if p := pod(st, "prod/good"); p == nil || len(p.IPs) != 1 {
				t.Errorf("the file's good pod: %+v, want it with its address", p)
			}
			if tc.check != nil {
				tc.check(t, st)
			}
		})
	}
}

func pod(st policy.State, key string) *policy.Pod {
	for i := range st.Pods {
		if st.Pods[i].Key() == key {
			return &st.Pods[i]
		}
	}
	return nil
}

// Two pods claiming one address are both loaded: the compiler judges the address with both
// (policy/conflict.go) and reports the conflict.
func TestLoadKeepsPodsSharingAnAddress(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"pods.yaml": `apiVersion: v1
kind: Pod
metadata: {name: a, namespace: prod}
status: {phase: Running, podIPs: [{ip: 10.244.0.5}, {ip: "fd00::5"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: prod}
status: {phase: Pending, podIP: "fd00::5"}
`})
	st := mustLoad(t, dir)
	if len(st.Pods) != 2 || len(st.Problems) != 0 {
		t.Fatalf("pods %v, problems %v: want both pods, no problem", podKeys(st), st.Problems)
	}
}

// TestLoadFieldErrors: field problems keep their type for callers that want the path.
func TestLoadFieldErrors(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"np.yaml": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {policyTypes: [Both]}\n"})
	st := mustLoad(t, dir)
	var fe *field.Error
	if len(st.Problems) != 1 || !errors.As(st.Problems[0].Err, &fe) || fe.Field != "spec.policyTypes[0]" {
		t.Fatalf("problems %v: want a *field.Error for spec.policyTypes[0]", st.Problems)
	}
}

func TestLoadMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Load(%s) = %v, want an error naming the path", path, err)
	}
}
