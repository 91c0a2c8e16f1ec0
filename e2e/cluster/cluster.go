// Package cluster runs a real Kubernetes control plane for podwall's tests: kube-apiserver
// and etcd, built from Go modules (build.sh, the wrapper module in testenv/), started on free
// 127.0.0.1 ports with fresh certificates, stopped by PID. There is no kubelet, scheduler or
// controller manager: tests create pods with spec.nodeName set and write status.podIPs
// through the status subresource themselves, and namespaces never finish terminating.
//
// The binaries are cached per version under ~/.cache/podwall-testenv/<version> (see
// build.sh); the first build on a machine takes ≈ 10 min on 2 cores. Binaries builds them
// when missing, under a lock, so concurrent test binaries build once.
//
// Every server has a watchdog that kills it when the test process dies (see proc), so a
// killed `go test` leaks no server. A Cluster can also run inside a network namespace
// (Options.Netns: a lab node's, or one of its own on the lab's underlay), bound to an address
// there (Options.BindAddress), so that lab nodes reach it and its pod proxy reaches them; the
// test process then talks to it through a relay on 127.0.0.1 whose connections are made in
// that namespace, and no route joins the two. Share one Cluster per test binary — Shared starts it on
// first use, StopShared in TestMain stops it; Client makes an unthrottled clientset — and
// isolate tests by namespace: a Cluster costs ≈ 300 MB of memory and ≈ 4 s to start.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Binaries returns the directory holding the kube-apiserver and etcd binaries. It uses
// $PODWALL_TESTENV_BIN when set; otherwise it runs build.sh, which returns the cache
// directory at once when the binaries are there and builds them (minutes) when not. Build
// progress goes to log.
func Binaries(ctx context.Context, log io.Writer) (string, error) {
	if dir := os.Getenv("PODWALL_TESTENV_BIN"); dir != "" {
		return dir, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cluster: cannot locate build.sh")
	}
	script := filepath.Join(filepath.Dir(file), "build.sh")
	cmd := exec.CommandContext(ctx, "sh", script)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, log
	// When ctx ends (a test about to hit its -timeout), stop the whole build, go build and
	// its compilers included, so no orphan holds the lock or the machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("cluster: building kube-apiserver and etcd did not finish in time (%w): "+
				"run %s once (≈ 10 min on a fresh machine; `make testenv`), or give the test a longer -timeout", ctx.Err(), script)
		}
		return "", fmt.Errorf("cluster: %s: %w", script, err)
	}
	return strings.TrimSpace(out.String()), nil
}

// TestContext returns a context that ends a minute before a test binary's deadline (its
// -timeout), so a build or start that cannot finish fails with its reason instead of the
// test binary's panic. Without a deadline it never ends.
func TestContext(deadline time.Time, ok bool) (context.Context, context.CancelFunc) {
	if !ok {
		return context.WithCancel(context.Background())
	}
	return context.WithDeadline(context.Background(), deadline.Add(-time.Minute))
}

// Options configures Start. The zero value is valid.
type Options struct {
	// BinDir holds kube-apiserver and etcd; default Binaries().
	BinDir string
	// Dir receives certificates, etcd's data, logs and the admin kubeconfig; default a new
	// temporary directory, removed by Stop. etcd preallocates ≈ 123 MB there: keep it off
	// tmpfs.
	Dir string
	// Log receives build progress and one line per server start and stop; default
	// io.Discard.
	Log io.Writer
	// Netns, when set, names a network namespace (bind-mounted at /run/netns/<name>, as
	// `ip netns add` and package lab make them) in which etcd and kube-apiserver run, for
	// clients that live there and beyond: lab nodes, and the API server's own connections
	// (its pod proxy dials pod addresses from there). etcd listens on that namespace's
	// loopback. The test process reaches the API server through a relay on 127.0.0.1 of its
	// own namespace whose connections are made inside Netns (Cluster.Addr): no address or
	// route joins the two namespaces.
	Netns string
	// BindAddress is the address the API server listens on and advertises, in Netns (e.g.
	// the namespace's address on the lab's underlay, so every lab node reaches it); default
	// 127.0.0.1. Its serving certificate names it.
	BindAddress netip.Addr
}

// Cluster is a running kube-apiserver and etcd.
type Cluster struct {
	// Host is the API server's URL for the test process, "https://127.0.0.1:<port>".
	Host string
	// Addr is where the test process reaches it, "127.0.0.1:<port>": its listen address, or
	// with Options.Netns the relay to it.
	Addr string
	// Listen is the API server's listen address in its own network namespace: Addr, or with
	// Options.Netns BindAddress and its port, which clients inside that namespace's network
	// dial (https://<Listen>, named by the serving certificate).
	Listen string
	// CA is the PEM certificate that signed the API server's serving certificate.
	CA []byte
	// Kubeconfig is the path of an admin kubeconfig (a client certificate in the group
	// system:masters).
	Kubeconfig string
	// Admin is the admin client configuration.
	Admin *rest.Config
	// Dir holds the certificates, data and logs.
	Dir string

	binDir, etcdURL string
	netns           string
	pki             *pki
	log             io.Writer
	removeDir       bool
	front           io.Closer // with a netns: the relay at Addr

	mu        sync.Mutex
	etcd      *proc
	apiserver *proc
	stopped   bool
}

// Start starts etcd and kube-apiserver and waits until the API server is ready (/readyz),
// which includes its bootstrap: RBAC roles, priority classes, the default namespace.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.BinDir == "" {
		if o.BinDir, err = Binaries(ctx, o.Log); err != nil {
			return nil, err
		}
	}
	c = &Cluster{binDir: o.BinDir, Dir: o.Dir, log: o.Log, netns: o.Netns}
	bind := o.BindAddress
	if !bind.IsValid() {
		bind = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "podwall-testenv-"); err != nil {
			return nil, err
		}
		c.removeDir = true
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.pki, err = newPKI(c.Dir, bind); err != nil {
		return nil, fmt.Errorf("cluster: certificates: %w", err)
	}
	c.CA = c.pki.caCert
	var ports []int
	if err := inNetns(c.netns, func() (err error) {
		ports, err = freePorts(bind, 3)
		return err
	}); err != nil {
		return nil, err
	}
	c.Listen = net.JoinHostPort(bind.String(), strconv.Itoa(ports[2]))
	c.Addr = c.Listen
	if c.netns != "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		c.front = c.Relay(ln)
		c.Addr = ln.Addr().String()
	}
	c.Host = "https://" + c.Addr
	c.Admin = &rest.Config{Host: c.Host, TLSClientConfig: rest.TLSClientConfig{
		CAData: c.pki.caCert, CertData: c.pki.adminCert, KeyData: c.pki.adminKey}}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.Host, c.CA, func(u *clientcmdapi.AuthInfo) {
		u.ClientCertificateData, u.ClientKeyData = c.pki.adminCert, c.pki.adminKey
	}); err != nil {
		return nil, err
	}

	start := time.Now()
	if err := c.startEtcd(ctx, ports[0], ports[1]); err != nil {
		return nil, err
	}
	if err := c.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.log, "cluster: ready in %v\n", time.Since(start).Round(time.Millisecond))
	return c, nil
}

func (c *Cluster) startEtcd(ctx context.Context, clientPort, peerPort int) error {
	client := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	c.etcdURL = client
	p, err := c.startProc("etcd", []string{
		"--name", "podwall", "--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "podwall=" + peer,
		"--unsafe-no-fsync", "--log-level", "warn",
	}, filepath.Join(c.Dir, "etcd.log"), c.orphanDir())
	if err != nil {
		return err
	}
	c.etcd = p
	fmt.Fprintf(c.log, "cluster: etcd pid %d on %s%s\n", p.cmd.Process.Pid, client, c.where())
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: c.dial, DisableKeepAlives: true}}
	return poll(ctx, 30*time.Second, p, func() error {
		resp, err := hc.Get(client + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) on the cluster's port
// and waits until it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errStopped
	}
	if c.apiserver != nil && !c.apiserver.exited() {
		return errors.New("cluster: kube-apiserver is running")
	}
	host, port, _ := net.SplitHostPort(c.Listen)
	p, err := c.startProc("kube-apiserver", []string{
		"--bind-address=" + host, "--advertise-address=" + host, "--secure-port=" + port,
		"--cert-dir=" + c.Dir,
		"--tls-cert-file=" + c.pki.serveCertFile, "--tls-private-key-file=" + c.pki.serveKeyFile,
		"--client-ca-file=" + c.pki.caFile,
		"--etcd-servers=" + c.etcdURL,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + c.pki.saPubFile,
		"--service-account-signing-key-file=" + c.pki.saKeyFile,
		"--authorization-mode=Node,RBAC",
		// No controller manager makes the default ServiceAccount of new namespaces.
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}, filepath.Join(c.Dir, "kube-apiserver.log"), "")
	if err != nil {
		return err
	}
	c.apiserver = p
	fmt.Fprintf(c.log, "cluster: kube-apiserver pid %d on https://%s%s\n", p.cmd.Process.Pid, c.Listen, c.where())
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	return poll(ctx, 60*time.Second, p, func() error {
		resp, err := hc.Get(c.Host + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s: %s", resp.Status, body)
		}
		return nil
	})
}

// StopAPIServer kills kube-apiserver (SIGKILL: a crash, the harshest case for clients,
// whose connections break at once); etcd keeps the data, and StartAPIServer brings it back
// on the same address.
func (c *Cluster) StopAPIServer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver == nil {
		return
	}
	c.apiserver.stop(syscall.SIGKILL, 0)
	fmt.Fprintf(c.log, "cluster: kube-apiserver killed\n")
}

// Stop stops both servers and removes the directory Start created. It is idempotent.
// kube-apiserver gets SIGTERM and 5 s: with watches open it would drain for a minute.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	for _, p := range []*proc{c.apiserver, c.etcd} {
		if p != nil {
			p.stop(syscall.SIGTERM, 5*time.Second)
		}
	}
	if c.front != nil {
		c.front.Close()
	}
	if c.removeDir {
		return os.RemoveAll(c.Dir)
	}
	return nil
}

// Logs returns the last lines of a server's log ("kube-apiserver" or "etcd").
func (c *Cluster) Logs(server string, lines int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range []*proc{c.apiserver, c.etcd} {
		if p != nil && p.name == server {
			return p.logTail(lines)
		}
	}
	return ""
}

// TokenConfig returns a client configuration that authenticates with a bearer token only.
func (c *Cluster) TokenConfig(token string) *rest.Config {
	return &rest.Config{Host: c.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: c.CA}}
}

// WriteTokenKubeconfig writes a kubeconfig that holds only a bearer token (and the CA), for
// server — the cluster's Host, or the address of a relay to it.
func (c *Cluster) WriteTokenKubeconfig(path, server, token string) error {
	return writeKubeconfig(path, server, c.CA, func(u *clientcmdapi.AuthInfo) { u.Token = token })
}

func writeKubeconfig(path, server string, ca []byte, auth func(*clientcmdapi.AuthInfo)) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testenv"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	user := clientcmdapi.NewAuthInfo()
	auth(user)
	cfg.AuthInfos["user"] = user
	cfg.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: "user"}
	cfg.CurrentContext = "testenv"
	return clientcmd.WriteToFile(*cfg, path)
}

func (c *Cluster) httpClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.pki.caCert) {
		return nil, errors.New("cluster: bad CA")
	}
	cert, err := tls.X509KeyPair(c.pki.adminCert, c.pki.adminKey)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}, nil
}

// poll calls check every 100 ms until it succeeds, p exits, timeout passes or ctx ends.
func poll(ctx context.Context, timeout time.Duration, p *proc, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return p.exitError()
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %v: %v\n%s", p.name, timeout, err, p.logTail(30))
		case <-tick.C:
		}
	}
}

// freePorts returns n distinct TCP ports free on 127.0.0.1 and on addr (of the calling
// thread's network namespace). They are free when returned; nothing reserves them.
func freePorts(addr netip.Addr, n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for len(ports) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		if !addr.IsLoopback() {
			// The API server's port must be free on its own address too.
			other, err := net.Listen("tcp", netip.AddrPortFrom(addr, uint16(port)).String())
			if err != nil {
				continue
			}
			lns = append(lns, other)
		}
		ports = append(ports, port)
	}
	return ports, nil
}

// startProc starts a server from the cluster's binaries, in its network namespace (through
// `ip netns exec`, which execs: the process is the server, as the watchdog expects).
func (c *Cluster) startProc(name string, args []string, logPath, orphanDir string) (*proc, error) {
	bin := filepath.Join(c.binDir, name)
	if c.netns != "" {
		args = append([]string{"netns", "exec", c.netns, bin}, args...)
		bin = "ip"
	}
	return startProc(name, bin, args, serverEnv(), logPath, orphanDir)
}

// where names the servers' network namespace in log lines.
func (c *Cluster) where() string {
	if c.netns == "" {
		return ""
	}
	return " in netns " + c.netns
}

// orphanDir is the directory etcd's watchdog removes when the test process dies: the one
// Start created, not one the caller gave.
func (c *Cluster) orphanDir() string {
	if c.removeDir {
		return c.Dir
	}
	return ""
}

// PIDs returns the process ids of the servers: etcd, then kube-apiserver.
func (c *Cluster) PIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pids []int
	for _, p := range []*proc{c.etcd, c.apiserver} {
		if p != nil && !p.exited() {
			pids = append(pids, p.cmd.Process.Pid)
		}
	}
	return pids
}
