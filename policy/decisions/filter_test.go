package decisions

import (
	"net/url"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy/flow"
)

func TestFilter(t *testing.T) {
	s := snapshot(t)
	webDB := record(s, web, db, flow.TCP, 3306)   // deny: ingress by db-policy; egress allowed by web-egress
	apiDB := record(s, api, db, flow.TCP, 3306)   // allow: ingress by db-policy
	webAPI := record(s, web, api, flow.TCP, 5000) // allow: egress by web-egress
	webAPI80 := record(s, web, api, flow.TCP, 80) // deny: egress by web-egress
	xDB := record(s, x, db, flow.TCP, 3306)       // deny: ingress; x's egress judged on node-2
	extWeb := record(s, ext, web, flow.TCP, 80)   // allow: nothing isolates web's ingress
	bad := malformed(s)
	all := map[string]*Record{"webDB": webDB, "apiDB": apiDB, "webAPI": webAPI, "webAPI80": webAPI80, "xDB": xDB, "extWeb": extWeb, "bad": &bad}

	tests := []struct {
		name   string
		filter Filter
		want   string // the records kept, in the order below
	}{
		{"zero filter keeps all", Filter{}, "webDB apiDB webAPI webAPI80 xDB extWeb bad"},

		// Verdict is this node's verdict.
		{"deny", Filter{Verdict: "deny"}, "webDB webAPI80 xDB bad"},
		{"allow", Filter{Verdict: "allow"}, "apiDB webAPI extWeb"},

		// Namespace and pod match either end.
		{"namespace", Filter{Namespace: []string{"dev"}}, "xDB"},
		{"namespaces are alternatives", Filter{Namespace: []string{"dev", "nope"}}, "xDB"},
		{"pod by name", Filter{Pod: []string{"api"}}, "apiDB webAPI webAPI80"},
		{"pod by namespace/name", Filter{Pod: []string{"prod/web"}}, "webDB webAPI webAPI80 extWeb"},
		{"pod in another namespace", Filter{Pod: []string{"dev/web"}}, ""},
		{"pods are alternatives", Filter{Pod: []string{"x", "prod/api"}}, "apiDB webAPI webAPI80 xDB"},
		{"pod and verdict", Filter{Pod: []string{"web"}, Verdict: "deny"}, "webDB webAPI80"},

		// Direction: this node judged that direction by policy.
		{"egress", Filter{Direction: "egress"}, "webDB webAPI webAPI80"},
		{"ingress", Filter{Direction: "ingress"}, "webDB apiDB xDB"},
		{"denied by egress", Filter{Direction: "egress", Verdict: "deny"}, "webAPI80"},
		{"denied by ingress", Filter{Direction: "ingress", Verdict: "deny"}, "webDB xDB"},
		{"allowed with ingress judged", Filter{Direction: "ingress", Verdict: "allow"}, "apiDB"},

		// Policy: took part on this node.
		{"policy by name", Filter{Policy: []string{"db-policy"}}, "webDB apiDB xDB"},
		{"policy by namespace/name", Filter{Policy: []string{"prod/web-egress"}}, "webDB webAPI webAPI80"},
		{"policy in another namespace", Filter{Policy: []string{"dev/db-policy"}}, ""},
		{"policy and verdict", Filter{Policy: []string{"web-egress"}, Verdict: "deny"}, "webDB webAPI80"},
	}
	order := strings.Fields("webDB apiDB webAPI webAPI80 xDB extWeb bad")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.filter.compile()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range order {
				r := all[k]
				if !m.record(r) {
					continue
				}
				e := r.Event()
				if m.event(&e) {
					got = append(got, k)
				}
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("kept %q, want %q", g, tt.want)
			}
		})
	}
}

func TestParseFilter(t *testing.T) {
	q, _ := url.ParseQuery("namespace=prod,dev&namespace=x&pod=prod/db&verdict=DENY&direction=ingress&policy=db-policy")
	f, err := ParseFilter(q)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.Namespace, " ") != "prod dev x" || f.Verdict != "deny" || f.Direction != "ingress" ||
		f.Pod[0] != "prod/db" || f.Policy[0] != "db-policy" {
		t.Errorf("got %+v", f)
	}
	back, err := ParseFilter(f.Values())
	if err != nil || js(back) != js(f) {
		t.Errorf("round trip: %+v %v", back, err)
	}

	q, _ = url.ParseQuery("verdict=maybe&direction=up&pod=/x&policy=a/b/c")
	_, err = ParseFilter(q)
	if err == nil {
		t.Fatal("bad filter accepted")
	}
	for _, want := range []string{`verdict "maybe"`, `direction "up"`, `pod "/x"`, `policy "a/b/c"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}
