package scrape

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is the value of one series.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples is one scrape, in no particular order.
type Samples []Sample

// Parse reads the Prometheus text exposition format.
func Parse(r io.Reader) (Samples, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	return fromFamilies(slices.Collect(maps.Values(mfs))), nil
}

// Gather reads what g gathers.
func Gather(g prometheus.Gatherer) (Samples, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	return fromFamilies(mfs), nil
}

func fromFamilies(mfs []*dto.MetricFamily) Samples {
	var s Samples
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			add := func(suffix string, v float64, extra ...string) {
				l := labels
				if len(extra) > 0 {
					l = maps.Clone(labels)
					l[extra[0]] = extra[1]
				}
				s = append(s, Sample{Name: name + suffix, Labels: l, Value: v})
			}
			switch {
			case m.Counter != nil:
				add("", m.GetCounter().GetValue())
			case m.Gauge != nil:
				add("", m.GetGauge().GetValue())
			case m.Untyped != nil:
				add("", m.GetUntyped().GetValue())
			case m.Histogram != nil:
				h := m.GetHistogram()
				inf := false
				for _, b := range h.GetBucket() {
					inf = inf || math.IsInf(b.GetUpperBound(), 1)
					add("_bucket", float64(b.GetCumulativeCount()), "le", formatFloat(b.GetUpperBound()))
				}
				if !inf { // a registry leaves the +Inf bucket out: it is the count
					add("_bucket", float64(h.GetSampleCount()), "le", "+Inf")
				}
				add("_sum", h.GetSampleSum())
				add("_count", float64(h.GetSampleCount()))
			case m.Summary != nil:
				sm := m.GetSummary()
				for _, q := range sm.GetQuantile() {
					add("", q.GetValue(), "quantile", formatFloat(q.GetQuantile()))
				}
				add("_sum", sm.GetSampleSum())
				add("_count", float64(sm.GetSampleCount()))
			}
		}
	}
	return s
}

func formatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// has reports whether labels hold every key, value pair of kv.
func has(labels map[string]string, kv []string) bool {
	if len(kv)%2 != 0 {
		panic(fmt.Sprintf("scrape: odd number of label arguments %q", kv))
	}
	for i := 0; i < len(kv); i += 2 {
		if v, ok := labels[kv[i]]; !ok || v != kv[i+1] {
			return false
		}
	}
	return true
}

// Sum adds the samples of metric name whose labels include the given ones, written as
// key, value pairs: Sum(name) adds every series of name, Sum(name, "verdict", "deny") those
// with verdict="deny". It is 0 when none matches.
func (s Samples) Sum(name string, labels ...string) float64 {
	var sum float64
	for _, x := range s {
		if x.Name == name && has(x.Labels, labels) {
			sum += x.Value
		}
	}
	return sum
}

// Value returns the value of the series of name with exactly the given labels (key, value
// pairs), and whether it exists.
func (s Samples) Value(name string, labels ...string) (float64, bool) {
	for _, x := range s {
		if x.Name == name && len(x.Labels) == len(labels)/2 && has(x.Labels, labels) {
			return x.Value, true
		}
	}
	return 0, false
}

// key identifies a sample's series.
func (x Sample) key() string {
	var b strings.Builder
	b.WriteString(x.Name)
	for _, k := range slices.Sorted(maps.Keys(x.Labels)) {
		fmt.Fprintf(&b, "\x00%s\x00%s", k, x.Labels[k])
	}
	return b.String()
}

// Sub returns s - prev, series by series: how much counters (and histogram buckets) grew
// between two scrapes. A series missing from prev counts from 0.
func (s Samples) Sub(prev Samples) Samples {
	before := make(map[string]float64, len(prev))
	for _, x := range prev {
		before[x.key()] = x.Value
	}
	d := make(Samples, len(s))
	for i, x := range s {
		x.Value -= before[x.key()]
		d[i] = x
	}
	return d
}

// Bucket is one cumulative histogram bucket: Count observations were at most UpperBound.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// Histogram returns the cumulative buckets of histogram name, summed over its series whose
// labels include the given ones (key, value pairs), ordered by upper bound; the last is
// +Inf. It is empty when the histogram has no series.
func (s Samples) Histogram(name string, labels ...string) []Bucket {
	counts := map[float64]float64{}
	for _, x := range s {
		if x.Name != name+"_bucket" || !has(x.Labels, labels) {
			continue
		}
		le, err := strconv.ParseFloat(x.Labels["le"], 64)
		if err != nil {
			continue
		}
		counts[le] += x.Value
	}
	var bs []Bucket
	for _, le := range slices.Sorted(maps.Keys(counts)) {
		bs = append(bs, Bucket{le, counts[le]})
	}
	return bs
}

// Quantile estimates the q-quantile from cumulative buckets the way Prometheus'
// histogram_quantile does: linear interpolation inside the bucket that holds it, the lower
// bound of the first bucket being 0. It returns NaN without observations; a quantile in the
// +Inf bucket returns the largest finite bound.
func Quantile(q float64, bs []Bucket) float64 {
	if len(bs) == 0 || bs[len(bs)-1].Count == 0 {
		return math.NaN()
	}
	total := bs[len(bs)-1].Count
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range bs {
		if b.Count >= rank {
			if math.IsInf(b.UpperBound, 1) {
				return lower
			}
			if b.Count == below {
				return b.UpperBound
			}
			return lower + (b.UpperBound-lower)*(rank-below)/(b.Count-below)
		}
		lower, below = b.UpperBound, b.Count
	}
	return lower
}
