package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podwall/podwall/cmd/podwall/lab"
)

func start(t *testing.T) *Cluster {
	t.Helper()
	return startWith(t, Options{})
}

// startWith starts a Cluster with o (and the test's log) and stops it when t ends.
func startWith(t *testing.T, o Options) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd (and builds them on a fresh machine)")
	}
	ctx, cancel := TestContext(t.Deadline())
	defer cancel()
	o.Log = testWriter{t}
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// The servers answer as the version built, the admin is admin, ServiceAccount tokens work,
// and the API server comes back after a restart with its data.
func TestCluster(t *testing.T) {
	c := start(t)
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(c.Admin)
	v, err := admin.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.GitVersion, "v1.34.") {
		t.Errorf("server version %s, want v1.34.x (the -X flags of build.sh)", v.GitVersion)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cluster-test"}}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}
	if _, err := admin.CoreV1().ServiceAccounts("cluster-test").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := admin.CoreV1().ServiceAccounts("cluster-test").CreateToken(ctx, "probe", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A ServiceAccount without a role binding is authenticated, and forbidden.
	user := kubernetes.NewForConfigOrDie(c.TokenConfig(tr.Status.Token))
	if _, err := user.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list pods as an unbound ServiceAccount: err = %v, want Forbidden", err)
	}

	c.StopAPIServer()
	if _, err := admin.CoreV1().Namespaces().Get(ctx, "cluster-test", metav1.GetOptions{}); err == nil {
		t.Error("API server answers while stopped")
	}
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, "cluster-test", metav1.GetOptions{}); err != nil {
		t.Errorf("after restart: %v", err)
	}
}

// A test process killed with SIGKILL leaks no server: the watchdogs stop them.
func TestWatchdog(t *testing.T) {
	if os.Getenv("PODWALL_CLUSTER_HELPER") == "1" {
		o := Options{Netns: os.Getenv("PODWALL_CLUSTER_NETNS")}
		if b := os.Getenv("PODWALL_CLUSTER_BIND"); b != "" {
			o.BindAddress = netip.MustParseAddr(b)
		}
		c, err := Start(context.Background(), o)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("dir", c.Dir)
		fmt.Println("pids", strings.Trim(fmt.Sprint(c.PIDs()), "[]"))
		select {} // until killed
	}
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	watchdog(t)
}

// watchdog starts a cluster in a helper process (in the network namespace and on the
// address env names, if any), kills the helper with SIGKILL and checks that its servers and
// its directory go.
func watchdog(t *testing.T, env ...string) {
	t.Helper()
	ctx, cancel := TestContext(t.Deadline())
	defer cancel()
	if _, err := Binaries(ctx, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestWatchdog$", "-test.v")
	helper.Env = append(append(os.Environ(), "PODWALL_CLUSTER_HELPER=1"), env...)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	var dir string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "dir "); ok {
			dir = rest
			continue
		}
		if rest, ok := strings.CutPrefix(sc.Text(), "pids "); ok {
			for _, f := range strings.Fields(rest) {
				var pid int
				fmt.Sscan(f, &pid)
				pids = append(pids, pid)
			}
			break
		}
		t.Log("helper:", sc.Text())
	}
	if len(pids) != 2 || dir == "" {
		helper.Process.Kill()
		helper.Wait()
		t.Fatalf("helper gave no server pids")
	}
	// The recorded PIDs are the servers themselves (`ip netns exec` execs), which the
	// watchdogs signal.
	for i, want := range []string{"etcd", "kube-apiserver"} {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pids[i])); strings.TrimSpace(string(comm)) != want {
			t.Errorf("pid %d is %q, want %s", pids[i], strings.TrimSpace(string(comm)), want)
		}
	}
	helper.Process.Kill()
	helper.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("server pid %d outlived its killed test process", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Then its directory goes (the watchdog waits up to 5 s for the server to stop).
	for {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			os.RemoveAll(dir)
			t.Fatalf("%s outlived its killed test process", dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A cluster started in a lab namespace (Options.Netns) on the namespace's underlay address:
// the test process reaches it through the relay at Addr; a client in another lab node
// reaches it at Listen and verifies its certificate; its servers run in that namespace
// (the PIDs are theirs), and a killed test process leaks none.
func TestNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	l, err := lab.New(lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cp, err := lab.Plan(1).AddNode(l, "control-plane")
	if err != nil {
		t.Fatal(err)
	}
	node, err := lab.Plan(2).AddNode(l, "node")
	if err != nil {
		t.Fatal(err)
	}
	c := startWith(t, Options{Netns: cp.Name(), BindAddress: cp.UnderlayV4})
	if host, _, _ := net.SplitHostPort(c.Listen); host != cp.UnderlayV4.String() ||
		!strings.HasPrefix(c.Addr, "127.0.0.1:") || c.Host != "https://"+c.Addr {
		t.Errorf("Listen %s, Addr %s, Host %s", c.Listen, c.Addr, c.Host)
	}
	// The test process, through the relay, as the admin.
	if _, err := kubernetes.NewForConfigOrDie(c.Admin).CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		t.Errorf("admin through the relay: %v", err)
	}
	// A lab node, on the underlay, trusting the CA only.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CA)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = node.Do(func() error { conn, err = (&net.Dialer{}).DialContext(ctx, network, addr); return err })
			return conn, err
		}}}
	resp, err := hc.Get("https://" + c.Listen + "/readyz")
	if err != nil {
		t.Fatalf("from another lab node: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("from another lab node: /readyz %s", resp.Status)
	}
	// The servers run in the namespace.
	var st syscall.Stat_t
	if err := syscall.Stat(cp.Path(), &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	for _, pid := range c.PIDs() {
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil || got != want {
			t.Errorf("server pid %d in %s (%v), want %s", pid, got, err, want)
		}
	}
	t.Run("watchdog", func(t *testing.T) {
		watchdog(t, "PODWALL_CLUSTER_NETNS="+node.Name(), "PODWALL_CLUSTER_BIND="+node.UnderlayV4.String())
	})
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || len(s) < i+3 || s[i+2] != 'Z'
}
