package decisions

import "testing"

func TestStreamURL(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"127.0.0.1:9091", "http://127.0.0.1:9091/debug/decisions?pod=db&verdict=deny"},
		{"http://localhost:8001/api/v1/namespaces/kube-system/pods/podwall-x:9091/proxy/", "http://localhost:8001/api/v1/namespaces/kube-system/pods/podwall-x:9091/proxy/debug/decisions?pod=db&verdict=deny"},
		{"[::1]:9091", "http://[::1]:9091/debug/decisions?pod=db&verdict=deny"},
	} {
		got, err := StreamURL(c.addr, Filter{Pod: []string{"db"}, Verdict: "deny"})
		if err != nil || got != c.want {
			t.Errorf("%s: %s %v, want %s", c.addr, got, err, c.want)
		}
	}
}
