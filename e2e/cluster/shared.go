package cluster

import (
	"os"
	"sync"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Shared returns the Cluster that the tests of one test binary share, starting it (and
// building kube-apiserver and etcd, on a fresh machine) on first use, with progress on
// stderr; with -short it skips t. Tests isolate themselves by namespace. TestMain stops it
// with StopShared after m.Run.
func Shared(t *testing.T) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd (and builds them on a fresh machine)")
	}
	shared.once.Do(func() {
		ctx, cancel := TestContext(t.Deadline())
		defer cancel()
		shared.c, shared.err = Start(ctx, Options{Log: os.Stderr})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.c
}

// StopShared stops the Cluster Shared started, if any.
func StopShared() error {
	if shared.c == nil {
		return nil
	}
	return shared.c.Stop()
}

// Client returns a clientset for cfg without client-side throttling: a test's own changes
// must not queue behind a rate limit.
func Client(t testing.TB, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 1000, 1000
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
