package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gobwas/ws"
)

// chromium finds Debian's chromium (or $CHROMIUM). Without it the browser test skips, except
// in CI (CI=true), where .ci/run installs it and a missing browser is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (CI installs it in .ci/run: apt-get install chromium)")
	}
	t.Skip("chromium is not installed: apt-get install chromium to run the live page in a real browser")
	return ""
}

// artifactsDir is where tests leave files for people: $ARTIFACTS_DIR, or testdata/artifacts
// (ignored by git).
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join("testdata", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// TestBrowserLivePage opens the agent's live page (/debug/) in headless chromium and checks
// that a denied connection shows up, red, naming db-policy; that pause holds new decisions
// back and resume shows them; and saves a screenshot.
//
// The browser runs inside the node's network namespace (`ip netns exec`), where the debug
// listener is, on 127.0.0.1:9091: like an operator's browser on the node, and unable to
// reach anything outside the lab. chromedp starts it through a wrapper script and talks to
// its DevTools endpoint, which is then on the namespace's loopback too: the test dials it
// from inside the namespace (gobwas/ws's dialer, which chromedp uses).
func TestBrowserLivePage(t *testing.T) {
	browser := chromium(t)
	e := threeTierEnv(t)
	node := e.Nodes["node-1"]

	wrapper := filepath.Join(t.TempDir(), "chromium-in-netns")
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", node.Name(), browser)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	oldDial := ws.DefaultDialer.NetDial
	ws.DefaultDialer.NetDial = dialIn(node.NS)
	defer func() { ws.DefaultDialer.NetDial = oldDial }()

	// The profile is not a t.TempDir: chromium's helper processes may still write to it for
	// a moment after the browser has gone, which fails TempDir's own cleanup.
	profile, err := os.MkdirTemp("", "podwall-e2e-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeProfile(t, profile) })
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(wrapper),
		chromedp.NoSandbox, // root
		chromedp.DisableGPU,
		chromedp.UserDataDir(profile),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-crash-reporter", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.WindowSize(1500, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	var status string
	if err := chromedp.Run(ctx,
		chromedp.Navigate("http://127.0.0.1:9091/debug/"),
		chromedp.WaitVisible("#decisions", chromedp.ByID),
		chromedp.Poll(`document.getElementById("status").textContent.startsWith("live")`, nil, chromedp.WithPollingTimeout(15*time.Second)),
		chromedp.Text("#status", &status, chromedp.ByID),
	); err != nil {
		t.Fatalf("opening the live page: %v (status %q)\n%s", err, status, e.Agents["node-1"].Logs())
	}
	e.waitFor(func() bool { return e.metric("node-1", "podwall_decisions_subscribers") == 1 },
		func() string { return "the page did not subscribe" })

	// A denied connection (and an allowed one): both appear, the denial red with db-policy.
	e.check(
		probe{from: "prod/web", to: "prod/db", port: 3306, allow: false},
		probe{from: "prod/api", to: "prod/db", port: 3306, allow: true},
	)
	webDeny := `[...document.querySelectorAll("#rows tr.deny")].some(r => r.textContent.includes("prod/web") && r.textContent.includes("prod/db-policy") && r.textContent.includes("TCP/3306"))`
	apiAllow := `[...document.querySelectorAll("#rows tr.allow")].some(r => r.textContent.includes("prod/api") && r.textContent.includes("prod/db"))`
	policyCounts := `[...document.querySelectorAll("#by-policy tbody tr")].some(r => r.cells[0].textContent === "prod/db-policy" && +r.cells[2].textContent >= 2 && +r.cells[1].textContent >= 2)`
	var denyColour string
	if err := chromedp.Run(ctx,
		chromedp.Poll(webDeny, nil, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Poll(apiAllow, nil, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Poll(policyCounts, nil, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Evaluate(`getComputedStyle(document.querySelector("#rows tr.deny td.verdict")).color`, &denyColour),
	); err != nil {
		t.Fatalf("the page does not show the decisions: %v\n%s", err, pageText(ctx))
	}
	if denyColour != "rgb(198, 40, 40)" {
		t.Errorf("deny verdict colour %q, want red rgb(198, 40, 40)", denyColour)
	}

	// Pause: a new denial (from the external user) is held back; resume shows it.
	userDeny := `[...document.querySelectorAll("#rows tr.deny")].some(r => r.textContent.includes("192.0.2.") && r.textContent.includes("prod/db-policy"))`
	if err := chromedp.Run(ctx, chromedp.Click("#pause", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	e.check(probe{from: "user", to: "prod/db", port: 3306, allow: false})
	var shown bool
	if err := chromedp.Run(ctx,
		chromedp.Poll(`/paused, [1-9]\d* new/.test(document.getElementById("status").textContent)`, nil, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Evaluate(userDeny, &shown),
	); err != nil {
		t.Fatalf("pause: %v\n%s", err, pageText(ctx))
	}
	if shown {
		t.Error("a decision made while paused is shown before resume")
	}
	if err := chromedp.Run(ctx,
		chromedp.Click("#pause", chromedp.ByID),
		chromedp.Poll(userDeny, nil, chromedp.WithPollingTimeout(10*time.Second)),
	); err != nil {
		t.Fatalf("resume: %v\n%s", err, pageText(ctx))
	}

	var png []byte
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifactsDir(t), "live-page.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the live page: %s", shot)
}

// pageText returns the page's visible text, for failure messages.
func pageText(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var s string
	if err := chromedp.Run(ctx, chromedp.Evaluate(`document.body.innerText`, &s)); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "(page text: timed out)"
		}
		return "(page text: " + err.Error() + ")"
	}
	return strings.TrimSpace(s)
}

// removeProfile removes chromium's profile directory once its helper processes have stopped
// writing to it: it retries for up to 10 s, then leaves it and says so.
func removeProfile(t *testing.T, dir string) {
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = os.RemoveAll(dir); err == nil {
			return
		}
	}
	t.Logf("leaving chromium's profile %s: %v", dir, err)
}
