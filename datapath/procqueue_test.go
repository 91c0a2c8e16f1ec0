package datapath

import (
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestParseQueueStats(t *testing.T) {
	// Two queues as a 6.x kernel prints them.
	in := "  100  16571     3 2   128     7     2     4242  1\n" +
		"  101 -4123456     0 2   128     0     0        9  1\n"
	if _, err := ParseQueueStats(strings.NewReader(in)); err == nil {
		t.Fatal("negative port id parsed; want an error")
	}
	in = strings.Replace(in, "-4123456", "4123456", 1)
	got, err := ParseQueueStats(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []QueueStat{
		{Queue: 100, PortID: 16571, Len: 3, CopyMode: 2, CopyRange: 128, Dropped: 7, UserDropped: 2, IDSequence: 4242},
		{Queue: 101, PortID: 4123456, Len: 0, CopyMode: 2, CopyRange: 128, IDSequence: 9},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d queues, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("queue %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"100 1 2 3\n", "100 1 2 3 4 5 6 x 1\n"} {
		if _, err := ParseQueueStats(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: parsed, want an error", bad)
		}
	}
	if got, err := ParseQueueStats(strings.NewReader("")); err != nil || len(got) != 0 {
		t.Errorf("empty file: %v %v", got, err)
	}
}

// TestReadQueueStatsLive binds a queue in a throwaway network namespace and finds it, with
// the copy range it asked for, in that namespace's file: the column layout of this kernel.
func TestReadQueueStatsLive(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and the kernel (not -short)")
	}
	runtime.LockOSThread() // the thread stays in the new namespace's past: never unlocked
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Skipf("new network namespace: %v", err)
	}
	defer ns.Close()
	defer netns.Set(orig)

	before, err := ReadQueueStats()
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 0 {
		t.Fatalf("fresh namespace has queues: %+v", before)
	}
	nf, err := nfqueue.Open(&nfqueue.Config{NfQueue: 4242, MaxPacketLen: 77, MaxQueueLen: 10,
		Copymode: nfqueue.NfQnlCopyPacket, AfFamily: unix.AF_UNSPEC, WriteTimeout: time.Second})
	if err != nil {
		t.Skipf("nfqueue: %v", err)
	}
	defer nf.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := nf.RegisterWithErrorFunc(ctx, func(nfqueue.Attribute) int { return 0 }, func(error) int { return 1 }); err != nil {
		t.Fatal(err)
	}
	got, err := ReadQueueStats()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %+v, want queue 4242 only", got)
	}
	q := got[0]
	if q.Queue != 4242 || q.CopyMode != 2 || q.CopyRange != 77 || q.PortID == 0 || q.Len != 0 || q.Dropped != 0 || q.UserDropped != 0 {
		t.Errorf("got %+v, want queue 4242, copy mode 2 (packet), range 77, a port id, nothing queued", q)
	}
}
