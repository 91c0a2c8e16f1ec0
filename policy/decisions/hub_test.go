package decisions

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/policy/flow"
)

func TestHubDropsWhenFullAndCounts(t *testing.T) {
	s := snapshot(t)
	var h Hub
	if h.Active() {
		t.Fatal("zero hub is active")
	}
	h.Publish(record(s, web, db, flow.TCP, 3306)) // nobody listens: nothing happens

	slow, _ := h.Subscribe(Filter{}, 2)
	denies, _ := h.Subscribe(Filter{Verdict: "deny"}, 100)
	if !h.Active() || h.Subscribers() != 2 {
		t.Fatalf("subscribers = %d", h.Subscribers())
	}
	for range 5 {
		h.Publish(record(s, web, db, flow.TCP, 3306))
		h.Publish(record(s, api, db, flow.TCP, 3306))
	}
	if len(slow.C()) != 2 || slow.Lost() != 8 || slow.Lost() != 0 || slow.Dropped() != 8 {
		t.Errorf("slow: buffered %d, dropped %d", len(slow.C()), slow.Dropped())
	}
	if len(denies.C()) != 5 || denies.Dropped() != 0 {
		t.Errorf("denies: buffered %d, dropped %d", len(denies.C()), denies.Dropped())
	}
	if sent, dropped := h.Totals(); sent != 7 || dropped != 8 {
		t.Errorf("totals: sent %d dropped %d, want 7 and 8", sent, dropped)
	}
	slow.Close()
	slow.Close()
	if h.Subscribers() != 1 {
		t.Errorf("subscribers after close = %d", h.Subscribers())
	}
	if sent, dropped := h.Totals(); sent != 7 || dropped != 8 {
		t.Errorf("totals after close: sent %d dropped %d, want 7 and 8", sent, dropped)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&h)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		got[mf.GetName()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	want := map[string]float64{"podwall_decisions_subscribers": 1, "podwall_decisions_sent_total": 7, "podwall_decisions_dropped_total": 8}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("metrics %v, want %v", got, want)
	}
	denies.Close()
	if h.Active() {
		t.Error("active after every subscriber closed")
	}
}

// TestPublishAllocatesNothing: the datapath's side of the stream, with and without
// subscribers and filters.
func TestPublishAllocatesNothing(t *testing.T) {
	s := snapshot(t)
	r := record(s, web, db, flow.TCP, 3306)
	var h Hub
	if n := testing.AllocsPerRun(1000, func() { h.Publish(r) }); n != 0 {
		t.Errorf("no subscriber: %v allocs", n)
	}
	a, _ := h.Subscribe(Filter{}, 8)
	b, _ := h.Subscribe(Filter{Namespace: []string{"prod"}, Pod: []string{"db"}, Verdict: "deny", Direction: "ingress"}, 8)
	defer a.Close()
	defer b.Close()
	if n := testing.AllocsPerRun(1000, func() { h.Publish(r) }); n != 0 {
		t.Errorf("two subscribers: %v allocs", n)
	}
	if a.Dropped() == 0 || b.Dropped() == 0 {
		t.Error("buffers of 8 took 1000 records")
	}
}

// The hub bounds subscribers, each buffer, and all buffers together: clients asking for the
// largest buffers get them until MaxBuffered is reached, then smaller ones, then none; a
// closed subscriber gives its records back.
func TestHubLimits(t *testing.T) {
	var h Hub
	var subs []*Subscription
	total := 0
	for total < MaxBuffered {
		s, err := h.Subscribe(Filter{}, 1<<30)
		if err != nil {
			t.Fatalf("after %d records: %v", total, err)
		}
		if want := min(MaxBuffer, MaxBuffered-total); cap(s.c) != want {
			t.Fatalf("buffer %d, want it cut to %d", cap(s.c), want)
		}
		total += cap(s.c)
		subs = append(subs, s)
	}
	if _, err := h.Subscribe(Filter{}, 1); !errors.Is(err, ErrTooManySubscribers) {
		t.Errorf("buffers full: %v, want ErrTooManySubscribers", err)
	}
	subs[0].Close()
	subs[0].Close() // idempotent: gives its records back once
	s, err := h.Subscribe(Filter{}, 0)
	if err != nil || cap(s.c) != DefaultBuffer {
		t.Fatalf("after a close: %v, buffer %d", err, cap(s.c))
	}
	subs = append(subs[1:], s)
	for _, s := range subs {
		s.Close()
	}
	for range MaxSubscribers {
		s, err := h.Subscribe(Filter{}, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	if _, err := h.Subscribe(Filter{}, 1); !errors.Is(err, ErrTooManySubscribers) {
		t.Errorf("subscriber %d: %v, want ErrTooManySubscribers", MaxSubscribers+1, err)
	}
}

func TestHubConcurrent(t *testing.T) {
	s := snapshot(t)
	r := record(s, web, db, flow.TCP, 3306)
	var h Hub
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 { // publishers, as queue readers
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					h.Publish(r)
					runtime.Gosched() // leave the subscribers some CPU on small machines
				}
			}
		}()
	}
	for range 200 {
		sub, err := h.Subscribe(Filter{Verdict: "deny"}, 4)
		if err != nil {
			t.Fatal(err)
		}
		<-sub.C()
		sub.Close()
	}
	close(stop)
	wg.Wait()
	if h.Subscribers() != 0 {
		t.Errorf("subscribers = %d", h.Subscribers())
	}
	if sent, _ := h.Totals(); sent < 200 {
		t.Errorf("sent = %d, want at least 200", sent)
	}
}

func BenchmarkPublish(b *testing.B) {
	s := snapshot(b)
	r := record(s, web, db, flow.TCP, 3306)
	for _, n := range []int{0, 1, 4} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			var h Hub
			done := make(chan struct{})
			var wg sync.WaitGroup
			for range n {
				sub, _ := h.Subscribe(Filter{}, DefaultBuffer)
				wg.Add(1)
				go func() { // a fast reader
					defer wg.Done()
					defer sub.Close()
					for {
						select {
						case <-sub.C():
						case <-done:
							return
						}
					}
				}()
			}
			b.ReportAllocs()
			for b.Loop() {
				if h.Active() {
					h.Publish(r)
				}
			}
			close(done)
			wg.Wait()
		})
	}
}

// BenchmarkPublishLargeFilters: the datapath's cost of a verdict when every subscriber the
// hub allows filters on many pods, namespaces and policies that the record does not match
// (the worst case: every value checked). Filters bigger than MaxFilterValues are refused.
func BenchmarkPublishLargeFilters(b *testing.B) {
	s := snapshot(b)
	r := record(s, web, db, flow.TCP, 3306)
	for _, n := range []int{256, 60000} {
		b.Run(fmt.Sprintf("subscribers=%d/values=%d", MaxSubscribers, n), func(b *testing.B) {
			f := Filter{}
			for i := range n {
				f.Namespace = append(f.Namespace, fmt.Sprintf("ns-%d", i))
				f.Pod = append(f.Pod, fmt.Sprintf("ns-%d/pod-%d", i, i))
			}
			var h Hub
			for range MaxSubscribers {
				sub, err := h.Subscribe(f, 1)
				if err != nil {
					b.Skip(err)
				}
				defer sub.Close()
			}
			b.ReportAllocs()
			for b.Loop() {
				h.Publish(r)
			}
		})
	}
}
