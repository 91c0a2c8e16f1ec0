package manifests

import (
	"reflect"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy"
)

// loadFile parses one file's content, with YAML Lists split (splitList) or read whole.
func loadFile(name, content string, wholeLists bool) (policy.State, []string) {
	src := &source{files: []file{{name: name, data: []byte(content)}}, wholeLists: wholeLists}
	st, err := src.parse()
	var problems []string
	if err != nil {
		problems = strings.Split(err.Error(), "\n")
	}
	return st, problems
}

// splitLists reports how many documents of content splitList splits.
func splitLists(content string) int {
	l := &loader{seen: map[string]*object{}}
	n := 0
	for _, d := range l.splitYAML("f.yaml", []byte(content)) {
		if d.list != nil {
			n++
		}
	}
	return n
}

// TestLoadListSplit: a YAML List read entry by entry gives what it gives read whole: the
// same state, the same problems in the same order.
func TestLoadListSplit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		yaml  string
		split int // documents splitList splits
	}{
		// Split and read entry by entry.
		{"kubectl and sigs.k8s.io/yaml layout: entries in the first column, kind after items", `apiVersion: v1
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    labels: {team: a}
    name: prod
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: prod, labels: {app: web}}
  spec:
    containers:
    - name: c
      ports:
      - {name: http, containerPort: 8080}
  status: {phase: Running, podIPs: [{ip: 10.244.0.5}]}
kind: List
metadata:
  resourceVersion: ""
`, 1},
		{"indented entries, comments and blank lines between them, CRLF", "# the cluster\r\napiVersion: v1\r\nkind: List\r\nitems: # all of it\r\n  # first\r\n  - apiVersion: v1\r\n    kind: Namespace\r\n    metadata: {name: a}\r\n\r\n# between, in the first column\r\n  - {apiVersion: v1, kind: Namespace, metadata: {name: b}}\r\n  -   apiVersion: v1\r\n      kind: Namespace\r\n      metadata: {name: c}\r\n", 1},
		{"block scalars and multi-line scalars holding dashes and keys", `apiVersion: v1
kind: NamespaceList
items:
- metadata:
    name: a
    annotations:
      note: |
        - not an entry
       items:
      - not an entry either
      other: >-
        folded
        - text
      plain: one
        two
        - three
- metadata: {name: b}
`, 1},
		{"typed list, items without kind, and problems in entries", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicyList
items:
- metadata: {name: a}
  spec: {podSelector: {}, policyTypes: [Both]}
- metadata: {name: a}
  spec: {podSelector: {}}
-
- {apiVersion: v1, kind: Pod, metadata: {name: x}}
- {apiVersion: v1, kind: PodList, items: []}
- metadata: {name: b}
  spec: {podselector: {}}
`, 1},
		{"entries with anchors of their own", `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, labels: &l {app: a}}
  spec: {containers: [{name: c}]}
  status: {podIP: 10.0.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: b}
  spec: {containers: [{name: c}]}
  status: {podIP: 10.0.0.1, phase: Running}
`, 1},
		{"a refused List: its entries are not read", `apiVersion: v2
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
`, 1},
		{"an unknown field of the List", `apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
itemz: []
`, 1},
		{"empty and null items", "apiVersion: v1\nkind: List\nitems:\n-\n- null\n- ~\n", 1},

		// Split, but an entry does not convert alone: read whole.
		{"an alias of another entry's anchor", `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a, labels: &l {team: a}}
- apiVersion: v1
  kind: Namespace
  metadata: {name: b, labels: *l}
`, 1},
		{"a quoted scalar running over entries", `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a, annotations: {x: "one
- two"}}
- {apiVersion: v1, kind: Namespace, metadata: {name: b}}
`, 1},
		{"a flow collection running over entries", `apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace,
- metadata: {name: a}}
`, 1},
		{"broken YAML in an entry, among other problems in order", `apiVersion: v1
kind: Namespace
metadata: {name: ns1}
---
apiVersion: v1
kind: Namespace
metadata: {name: ns1}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: Bad}}
- apiVersion: v1
  kind: Namespace
  metadata: {name: a}
  kind: Pod
--- {oops}
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: ok, labels: {a: "b}}
--- x
apiVersion: v1
kind: Namespace
metadata: {name: Bad2}
`, 2},
		{"a refused List with a broken entry", `apiVersion: v2
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a}
`, 1},
		{"a duplicate items key", `apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
items: []
`, 0},

		// Not split: read whole.
		{"items in flow style", "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Namespace, metadata: {name: a}}]\n", 0},
		{"not a List", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nitems:\n- x\n", 0},
		{"entries less indented than the first", "apiVersion: v1\nkind: List\nitems:\n  - {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n - {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n", 0},
		{"items inside a quoted scalar", "apiVersion: v1\nkind: List\nmetadata: {continue: \"x\nitems:\n- y\nz\"}\n", 0},
		{"items of a List inside a block scalar", "|\nitems:\n- a\n", 0},
		{"a tagged sequence", "apiVersion: v1\nkind: List\nitems: !!seq\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := splitLists(tc.yaml); got != tc.split {
				t.Errorf("splitList splits %d documents, want %d", got, tc.split)
			}
			wantState, wantProblems := loadFile("f.yaml", tc.yaml, true)
			st, problems := loadFile("f.yaml", tc.yaml, false)
			if !reflect.DeepEqual(problems, wantProblems) {
				t.Errorf("problems, split:\n%s\nread whole:\n%s", strings.Join(problems, "\n"), strings.Join(wantProblems, "\n"))
			}
			if !reflect.DeepEqual(st, wantState) {
				t.Errorf("state, split:\n%+v\nread whole:\n%+v", st, wantState)
			}
		})
	}
}

// FuzzLoadListSplit: whatever the YAML, splitting Lists changes nothing.
func FuzzLoadListSplit(f *testing.F) {
	f.Add("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spec: {containers: [{name: c}]}\n")
	f.Add("apiVersion: v1\nitems:\n  - apiVersion: v1\n    kind: Namespace\n    metadata:\n      name: a\n      annotations: {x: \"y\n  - z\"}\n  # c\nkind: List\n")
	f.Add("apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a, labels: &l {x: y}}\n- metadata: {name: b, labels: *l}\n---\nkind: List\nitems:\n-\n")
	f.Add("apiVersion: v1\nkind: NamespaceList\nitems:\n- metadata:\n    name: a\n    annotations:\n      n: |\n        - x\n      m: a\n       b\n- metadata: {name: b}\nmetadata: {resourceVersion: \"1\"}\n")
	f.Fuzz(func(t *testing.T, yaml string) {
		wantState, wantProblems := loadFile("f.yaml", yaml, true)
		st, problems := loadFile("f.yaml", yaml, false)
		if !reflect.DeepEqual(problems, wantProblems) {
			t.Errorf("problems, split:\n%s\nread whole:\n%s", strings.Join(problems, "\n"), strings.Join(wantProblems, "\n"))
		}
		if !reflect.DeepEqual(st, wantState) {
			t.Errorf("state, split:\n%+v\nread whole:\n%+v", st, wantState)
		}
	})
}
