package decisions

import (
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
)

// FuzzParseFilter: whatever query string a client sends to /debug/decisions, reading the
// filter never panics; an accepted filter holds the caps, survives Values and ParseFilter
// unchanged, and keeps exactly the records the filter's definition (Filter's field docs,
// checked here the slow way on the spelled-out event) keeps.
//
// Long runs are not part of CI: `make fuzz` (10 minutes per target by default).
func FuzzParseFilter(f *testing.F) {
	for _, q := range []string{
		"", "namespace=prod,dev&namespace=x&pod=prod/db&verdict=DENY&direction=ingress&policy=db-policy",
		"pod=web&verdict=allow", "pod=/x", "policy=a/b/c", "direction=egress&verdict=deny", "policy=prod/web-egress",
		"namespace=%2C%2C,&pod=prod%2Fapi", "verdict=maybe&direction=up", "pod=" + strings.Repeat("a,", 300),
	} {
		f.Add(q)
	}
	s := snapshot(f)
	bad := malformed(s)
	records := []*Record{
		record(s, web, db, flow.TCP, 3306), record(s, api, db, flow.TCP, 3306), record(s, web, api, flow.TCP, 5000),
		record(s, web, api, flow.TCP, 80), record(s, x, db, flow.TCP, 3306), record(s, ext, web, flow.TCP, 80), &bad,
	}
	events := make([]Event, len(records))
	for i, r := range records {
		events[i] = r.Event()
	}
	f.Fuzz(func(t *testing.T, query string) {
		q, _ := url.ParseQuery(query) // what net/http gives the handler, whatever the error
		flt, err := ParseFilter(q)
		if err != nil {
			return
		}
		for _, l := range [][]string{flt.Namespace, flt.Pod, flt.Policy} {
			if len(l) > MaxFilterValues {
				t.Fatalf("%d values accepted", len(l))
			}
			for _, v := range l {
				if len(v) > MaxFilterValueLen || v == "" || strings.Contains(v, ",") {
					t.Fatalf("value %q accepted", v)
				}
			}
		}
		back, err := ParseFilter(flt.Values())
		if err != nil || !reflect.DeepEqual(back, flt) {
			t.Fatalf("round trip: %+v, %v; want %+v", back, err, flt)
		}
		m, err := flt.compile()
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range records {
			got := m.record(r) && m.event(&events[i])
			if want := keeps(flt, r, &events[i]); got != want {
				t.Errorf("filter %+v on %s → %s: kept %v, want %v", flt, events[i].Src, events[i].Dst, got, want)
			}
		}
	})
}

// keeps is Filter's definition read literally, on the spelled-out event.
func keeps(f Filter, r *Record, e *Event) bool {
	if f.Verdict != "" && e.Verdict != f.Verdict {
		return false
	}
	if len(f.Namespace)+len(f.Pod)+len(f.Policy) > 0 || f.Direction != "" {
		if r.Malformed != nil {
			return false
		}
	}
	pods := []string{e.SrcPod, e.DstPod}
	if len(f.Namespace) > 0 && !slices.ContainsFunc(pods, func(p string) bool {
		ns, _, _ := strings.Cut(p, "/")
		return p != "" && slices.Contains(f.Namespace, ns)
	}) {
		return false
	}
	named := func(want []string, key string) bool { // key is "ns/name"
		_, n, _ := strings.Cut(key, "/")
		return key != "" && (slices.Contains(want, key) || slices.Contains(want, n))
	}
	if len(f.Pod) > 0 && !named(f.Pod, e.SrcPod) && !named(f.Pod, e.DstPod) {
		return false
	}
	if f.Direction != "" {
		j := e.Egress
		if f.Direction == "ingress" {
			j = e.Ingress
		}
		if !j.Local || j.Code != "allowed" && j.Code != "no-rule-allows" || f.Verdict != "" && j.Verdict != f.Verdict {
			return false
		}
	}
	if len(f.Policy) > 0 && !slices.ContainsFunc([]*explain.Judgement{e.Egress, e.Ingress}, func(j *explain.Judgement) bool {
		return j != nil && j.Local && slices.ContainsFunc(j.Policies, func(p string) bool { return named(f.Policy, p) })
	}) {
		return false
	}
	return true
}
