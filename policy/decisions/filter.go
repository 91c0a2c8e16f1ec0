package decisions

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/explain"
)

// Filter selects decisions. The values of one field are alternatives (any may match); the
// fields combine (all must match). The zero Filter selects everything.
type Filter struct {
	// Namespace keeps decisions whose source or destination pod is in one of these namespaces.
	Namespace []string
	// Pod keeps decisions whose source or destination pod is one of these: "name" (in any
	// namespace) or "namespace/name".
	Pod []string
	// Verdict keeps the decisions this node gave that verdict: "allow" or "deny"; "" keeps both.
	Verdict string
	// Direction, "egress" or "ingress", keeps the decisions in which this node judged that
	// direction by policy (the pod is isolated for it and runs here); with Verdict, that
	// direction gave the Verdict. "" keeps all.
	Direction string
	// Policy keeps the decisions in which one of these policies took part on this node (it
	// allowed, or isolated the pod of a denying direction): "name" (in any namespace) or
	// "namespace/name".
	Policy []string
}

// Filter query parameters, shared by /debug/decisions, `podwall tail` and the live page.
// Repeat a parameter or separate values with commas for alternatives.
const (
	ParamNamespace = "namespace"
	ParamPod       = "pod"
	ParamVerdict   = "verdict"
	ParamDirection = "direction"
	ParamPolicy    = "policy"
)

// ParseFilter reads a filter from query parameters and checks it.
func ParseFilter(q url.Values) (Filter, error) {
	f := Filter{
		Namespace: list(q[ParamNamespace]), Pod: list(q[ParamPod]), Policy: list(q[ParamPolicy]),
		Verdict: strings.ToLower(q.Get(ParamVerdict)), Direction: strings.ToLower(q.Get(ParamDirection)),
	}
	_, err := f.compile()
	return f, err
}

// Values returns the filter as query parameters.
func (f Filter) Values() url.Values {
	q := url.Values{}
	set := func(k string, v []string) {
		if len(v) > 0 {
			q.Set(k, strings.Join(v, ","))
		}
	}
	set(ParamNamespace, f.Namespace)
	set(ParamPod, f.Pod)
	set(ParamPolicy, f.Policy)
	if f.Verdict != "" {
		q.Set(ParamVerdict, f.Verdict)
	}
	if f.Direction != "" {
		q.Set(ParamDirection, f.Direction)
	}
	return q
}

func list(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, x := range strings.Split(v, ",") {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
	}
	return out
}

// Filter limits: a filter is matched against every verdict on the datapath's goroutine, for
// every subscriber, so its size is bounded and its lists are matched with maps (a lookup per
// pod, whatever the number of values). Before, 64 subscribers filtering on 60,000 pods each
// cost 6–8 ms per verdict; with maps and this cap about 2 µs (BenchmarkPublishLargeFilters,
// policy/decisions/README.md).
const (
	// MaxFilterValues bounds the values of one filter parameter (namespace, pod or policy).
	MaxFilterValues = 256
	// MaxFilterValueLen bounds one value: a namespace (63 bytes), "/" and a name (253).
	MaxFilterValueLen = 63 + 1 + 253
)

// name is "namespace/name" split; an empty namespace matches any.
type name struct{ ns, name string }

func parseName(s string) (name, error) {
	ns, n, ok := strings.Cut(s, "/")
	if !ok {
		return name{name: s}, nil
	}
	if ns == "" || n == "" || strings.Contains(n, "/") {
		return name{}, fmt.Errorf("%q: want name or namespace/name", s)
	}
	return name{ns, n}, nil
}

// names is a set of "name" (in any namespace) and "namespace/name" values.
type names struct {
	anyNS map[string]struct{}
	inNS  map[name]struct{}
}

func (s *names) add(n name) {
	if n.ns == "" {
		if s.anyNS == nil {
			s.anyNS = map[string]struct{}{}
		}
		s.anyNS[n.name] = struct{}{}
		return
	}
	if s.inNS == nil {
		s.inNS = map[name]struct{}{}
	}
	s.inNS[n] = struct{}{}
}

func (s *names) empty() bool { return len(s.anyNS) == 0 && len(s.inNS) == 0 }

// has reports whether ns/n is in the set. It allocates nothing.
func (s *names) has(ns, n string) bool {
	if _, ok := s.anyNS[n]; ok {
		return true
	}
	_, ok := s.inNS[name{ns, n}]
	return ok
}

// matcher is a compiled Filter. record runs on the datapath's goroutine and allocates
// nothing; event checks what needs the spelled-out Event (policies), in the subscriber's.
type matcher struct {
	namespaces map[string]struct{}
	pods       names
	policies   names
	verdict    int8 // -1 any, else policy.Verdict
	direction  int8 // -1 any, else policy.Direction
}

func (f Filter) compile() (matcher, error) {
	m := matcher{verdict: -1, direction: -1}
	var errs []string
	switch f.Verdict {
	case "":
	case "allow":
		m.verdict = int8(policy.Allow)
	case "deny":
		m.verdict = int8(policy.Deny)
	default:
		errs = append(errs, fmt.Sprintf("verdict %q: want allow or deny", clip(f.Verdict)))
	}
	switch f.Direction {
	case "":
	case "egress":
		m.direction = int8(policy.Egress)
	case "ingress":
		m.direction = int8(policy.Ingress)
	default:
		errs = append(errs, fmt.Sprintf("direction %q: want egress or ingress", clip(f.Direction)))
	}
	capped := false
	for _, l := range []struct {
		param string
		vs    []string
	}{{ParamNamespace, f.Namespace}, {ParamPod, f.Pod}, {ParamPolicy, f.Policy}} {
		if len(l.vs) > MaxFilterValues {
			errs = append(errs, fmt.Sprintf("%s: %d values, at most %d", l.param, len(l.vs), MaxFilterValues))
			capped = true
		}
		for _, v := range l.vs {
			if len(v) > MaxFilterValueLen {
				errs = append(errs, fmt.Sprintf("%s %q: %d bytes, at most %d", l.param, clip(v), len(v), MaxFilterValueLen))
				capped = true
				break
			}
		}
	}
	if capped { // refused before building anything from a list that may be huge
		return matcher{}, fmt.Errorf("filter: %s", strings.Join(errs, "; "))
	}
	for _, ns := range f.Namespace {
		if m.namespaces == nil {
			m.namespaces = map[string]struct{}{}
		}
		m.namespaces[ns] = struct{}{}
	}
	for _, p := range f.Pod {
		n, err := parseName(p)
		if err != nil {
			errs = append(errs, "pod "+err.Error())
		}
		m.pods.add(n)
	}
	for _, p := range f.Policy {
		n, err := parseName(p)
		if err != nil {
			errs = append(errs, "policy "+err.Error())
		}
		m.policies.add(n)
	}
	if len(errs) > 0 {
		return m, fmt.Errorf("filter: %s", strings.Join(errs, "; "))
	}
	return m, nil
}

// clip cuts a value quoted in an error to 64 bytes.
func clip(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "…"
}

// record reports whether r passes every part of the filter but Policy.
func (m *matcher) record(r *Record) bool {
	if m.verdict >= 0 && r.Allow != (m.verdict == int8(policy.Allow)) {
		return false
	}
	if len(m.namespaces) == 0 && m.pods.empty() && m.direction < 0 {
		return true
	}
	if r.Malformed != nil {
		return false // no pods, no directions
	}
	src, dst := &r.Egress, &r.Ingress
	if len(m.namespaces) > 0 && !m.namespace(src) && !m.namespace(dst) {
		return false
	}
	if !m.pods.empty() && !m.pod(src) && !m.pod(dst) {
		return false
	}
	if m.direction >= 0 {
		j := &r.Egress
		if m.direction == int8(policy.Ingress) {
			j = &r.Ingress
		}
		if !j.Local || (j.Code != policy.Allowed && j.Code != policy.NoRuleAllows) {
			return false
		}
		if m.verdict >= 0 && int8(j.Verdict) != m.verdict {
			return false
		}
	}
	return true
}

// namespace reports whether j's pod is in one of the namespaces.
func (m *matcher) namespace(j *Judged) bool {
	if j.Name == "" {
		return false
	}
	_, ok := m.namespaces[j.Namespace]
	return ok
}

// pod reports whether j's pod is one of the pods.
func (m *matcher) pod(j *Judged) bool { return j.Name != "" && m.pods.has(j.Namespace, j.Name) }

// event reports whether e passes the Policy part of the filter.
func (m *matcher) event(e *Event) bool {
	if m.policies.empty() {
		return true
	}
	for _, j := range []*explain.Judgement{e.Egress, e.Ingress} {
		if j == nil || !j.Local {
			continue
		}
		for _, p := range j.Policies {
			ns, n, _ := strings.Cut(p, "/")
			if m.policies.has(ns, n) {
				return true
			}
		}
	}
	return false
}
