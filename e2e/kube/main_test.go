package kube

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podwall/podwall/e2e/cluster"
	"github.com/podwall/podwall/e2e/lab"
)

// binary is the podwall binary under test, built once by TestMain.
var binary string

// repo is the repository's root.
const repo = "../.."

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		if removed, err := lab.Sweep(lab.DefaultPrefix, 0); err != nil {
			fmt.Println("e2e/kube: sweep:", err)
		} else if len(removed) > 0 {
			fmt.Println("e2e/kube: swept stale lab namespaces:", removed)
		}
	}
	dir, err := os.MkdirTemp("", "podwall-e2e-kube-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "podwall")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/podwall")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("e2e/kube: building podwall:", err)
		os.Exit(1)
	}
	code := m.Run()
	if api != nil {
		if err := api.Stop(); err != nil {
			fmt.Println("e2e/kube: stopping the API server:", err)
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	apiOnce sync.Once
	api     *cluster.Cluster
	apiErr  error
)

// apiServer returns the API server shared by this run's tests, starting it (and building
// it, on a fresh machine) on first use.
func apiServer(t *testing.T) *cluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd (and builds them on a fresh machine)")
	}
	apiOnce.Do(func() {
		ctx, cancel := cluster.TestContext(t.Deadline())
		defer cancel()
		api, apiErr = cluster.Start(ctx, cluster.Options{Log: os.Stderr})
	})
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	return api
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
}

// clientFor returns a client without client-side throttling: the tests' own changes must
// not queue behind a rate limit.
func clientFor(t testing.TB, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 1000, 1000
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// podwall runs the binary and returns its stdout; a failure fails the test with stderr.
func podwall(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("podwall %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// randomID returns 6 random hex digits.
func randomID() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
