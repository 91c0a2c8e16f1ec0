package kube

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Every series of a Source is listed in cmd/podwall/README.md, where the agent's series are.
func TestSourceMetricsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../cmd/podwall/README.md")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *prometheus.Desc, 16)
	newSource(resources{}, Options{}).Describe(ch)
	close(ch)
	name := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	n := 0
	for d := range ch {
		m := name.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		n++
		if !strings.Contains(string(readme), "| `"+m[1]+"` |") {
			t.Errorf("%s is not listed in cmd/podwall/README.md", m[1])
		}
	}
	if n < 4 {
		t.Errorf("%d series described, want at least 4", n)
	}
}
