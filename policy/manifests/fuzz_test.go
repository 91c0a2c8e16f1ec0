package manifests

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// problemLine is how every problem Load reports starts: the file and the line of the object
// (or of the text) it is about.
var problemLine = regexp.MustCompile(`^f\.(yaml|json):[1-9][0-9]*: .`)

// FuzzLoad: whatever a manifest file holds, YAML or JSON, loading it never panics, every
// problem is one line naming the file and line (and from there the object), and loading the
// same bytes twice gives the same state and the same problems.
//
// Long runs are not part of CI: `make fuzz` (10 minutes per target by default).
func FuzzLoad(f *testing.F) {
	for _, seed := range []struct {
		json bool
		text string
	}{
		{false, "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {team: a}}\n"},
		{false, "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: prod, labels: {role: web}}\nspec:\n  nodeName: node-1\n  containers: [{name: c, ports: [{name: http, containerPort: 80}]}]\nstatus: {podIP: 10.244.1.2, podIPs: [{ip: 10.244.1.2}, {ip: 'fd00::2'}]}\n"},
		{false, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: prod}\nspec:\n  podSelector: {matchLabels: {role: db}}\n  ingress:\n  - from: [{podSelector: {matchExpressions: [{key: a, operator: In, values: [b]}]}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]\n    ports: [{port: 3306}, {port: http, protocol: UDP}, {port: 1000, endPort: 2000}]\n"},
		{false, "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n"},
		{false, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: prod}\nspec:\n  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 010.0.0.0/8}}]}]\n"},
		{false, "--- x\nkind: Pod\n  bad: [\n"},
		{true, `{"apiVersion":"v1","kind":"PodList","items":[{"metadata":{"name":"a","namespace":"n"},"status":{"podIP":"10.0.0.1"}}]} {"kind":"Nope"}`},
		{true, `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"p"},"spec":{"podSelector":{},"policyTypes":["Ingress","Sideways"]}}`},
	} {
		f.Add(seed.json, seed.text)
	}
	f.Fuzz(func(t *testing.T, isJSON bool, text string) {
		name := "f.yaml"
		if isJSON {
			name = "f.json"
		}
		st, problems := loadFile(name, text, false)
		for _, p := range problems {
			if !problemLine.MatchString(p) {
				t.Errorf("problem does not start with file:line: %q", p)
			}
		}
		st2, problems2 := loadFile(name, text, false)
		if !reflect.DeepEqual(problems, problems2) || !reflect.DeepEqual(st, st2) {
			t.Errorf("two loads differ:\n%s\n--\n%s", strings.Join(problems, "\n"), strings.Join(problems2, "\n"))
		}
	})
}
