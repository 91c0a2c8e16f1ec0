package scrape

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

const text = `# HELP x_seconds help
# TYPE x_seconds histogram
x_seconds_bucket{le="1e-06"} 50
x_seconds_bucket{le="2e-06"} 90
x_seconds_bucket{le="4e-06"} 100
x_seconds_bucket{le="+Inf"} 100
x_seconds_sum 0.0001
x_seconds_count 100
# TYPE y_total counter
y_total{verdict="allow",cache="hit"} 3
y_total{verdict="deny",cache="miss"} 4
y_total{verdict="deny",cache="hit"} 5
# TYPE up gauge
up 1
untyped_thing 7
`

func parse(t *testing.T, s string) Samples {
	t.Helper()
	m, err := Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLookups(t *testing.T) {
	m := parse(t, text)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"y_total", nil, 12},
		{"y_total", []string{"verdict", "deny"}, 9},
		{"y_total", []string{"verdict", "deny", "cache", "hit"}, 5},
		{"y_total", []string{"verdict", "none"}, 0},
		{"up", nil, 1},
		{"untyped_thing", nil, 7},
		{"x_seconds_count", nil, 100},
		{"missing", nil, 0},
	} {
		if got := m.Sum(c.name, c.labels...); got != c.want {
			t.Errorf("Sum(%s, %q) = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
	if v, ok := m.Value("up"); !ok || v != 1 {
		t.Errorf("Value(up) = %g, %v", v, ok)
	}
	if v, ok := m.Value("y_total", "cache", "hit", "verdict", "allow"); !ok || v != 3 {
		t.Errorf("Value(y_total allow hit) = %g, %v", v, ok)
	}
	if _, ok := m.Value("y_total", "verdict", "allow"); ok {
		t.Error("Value(y_total, verdict=allow) found a series with other labels too")
	}
	if _, ok := m.Value("missing"); ok {
		t.Error("Value(missing) found a series")
	}
}

func TestHistogramQuantile(t *testing.T) {
	h := parse(t, text).Histogram("x_seconds")
	if len(h) != 4 || !math.IsInf(h[3].UpperBound, 1) {
		t.Fatalf("Histogram = %v", h)
	}
	for _, c := range []struct{ q, want float64 }{{0.25, 0.5e-6}, {0.5, 1e-6}, {0.7, 1.5e-6}, {0.99, 3.8e-6}} {
		if got := Quantile(c.q, h); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("q%.2f = %g, want %g", c.q, got, c.want)
		}
	}
	if !math.IsNaN(Quantile(0.5, nil)) {
		t.Error("empty histogram: want NaN")
	}
}

func TestSub(t *testing.T) {
	before := parse(t, text)
	after := parse(t, strings.NewReplacer(`cache="hit"} 5`, `cache="hit"} 8`, `le="+Inf"} 100`, `le="+Inf"} 110`,
		"x_seconds_count 100", "x_seconds_count 110").Replace(text)+"new_total 2\n")
	d := after.Sub(before)
	if got := d.Sum("y_total"); got != 3 {
		t.Errorf("y_total grew by %g, want 3", got)
	}
	if got := d.Sum("new_total"); got != 2 {
		t.Errorf("new_total grew by %g, want 2 (from 0)", got)
	}
	if h := d.Histogram("x_seconds"); h[len(h)-1].Count != 10 || h[0].Count != 0 {
		t.Errorf("histogram difference %v", h)
	}
}

// A registry's histogram, without the +Inf bucket, reads like its text.
func TestGather(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x_seconds", Buckets: []float64{1e-6, 2e-6, 4e-6}})
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "y_total"}, []string{"verdict"})
	reg.MustRegister(h, c)
	for range 50 {
		h.Observe(0.5e-6)
	}
	for range 40 {
		h.Observe(1.5e-6)
	}
	for range 10 {
		h.Observe(3e-6)
	}
	c.WithLabelValues("deny").Add(4)
	m, err := Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m.Value("y_total", "verdict", "deny"); !ok || v != 4 {
		t.Errorf("Value(y_total deny) = %g, %v", v, ok)
	}
	want := parse(t, text).Histogram("x_seconds")
	got := m.Histogram("x_seconds")
	if len(got) != len(want) {
		t.Fatalf("Histogram = %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("bucket %d = %v, want %v", i, got[i], want[i])
		}
	}
}
