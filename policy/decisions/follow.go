package decisions

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// StreamURL makes the URL of an agent's stream from addr (HOST:PORT, or an http(s) URL
// possibly with a path prefix) and a filter.
func StreamURL(addr string, f Filter) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("--addr %q: want HOST:PORT or an http(s) URL", addr)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/debug/decisions"
	u.RawQuery = f.Values().Encode()
	return u.String(), nil
}

// FollowConfig says what stream Follow reads and where its lines go.
type FollowConfig struct {
	// URL is the stream (StreamURL).
	URL string
	// Line receives each non-empty line, newline included; an error ends Follow.
	Line func([]byte) error
	// Flush is called whenever Follow has handed over every line received so far: a quiet
	// stream shows at once, a busy one in batches. An error ends Follow.
	Flush func() error
	// Log receives one line about each reconnection.
	Log func(msg string)
	// Backoff is the first wait before reconnecting; it doubles up to MaxBackoff and starts
	// over once a connection is made.
	Backoff, MaxBackoff time.Duration
}

// errFatal marks errors that reconnecting cannot fix.
type errFatal struct{ error }

// Follow reads the stream until ctx ends (it then returns nil), reconnecting whenever the
// agent goes away. It returns an error only for what reconnecting cannot fix: a bad request
// (400, 404) or an error from Line or Flush.
func Follow(ctx context.Context, cfg FollowConfig) error {
	client := &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 10 * time.Second,
	}}
	wait := cfg.Backoff
	for attempt := 0; ; attempt++ {
		connected, err := follow(ctx, client, &cfg, attempt > 0)
		if ctx.Err() != nil {
			return nil
		}
		if fe := (errFatal{}); errors.As(err, &fe) {
			return fe.error
		}
		if connected {
			wait = cfg.Backoff
		}
		cfg.Log(fmt.Sprintf("%v; reconnecting in %v", err, wait))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, cfg.MaxBackoff)
	}
}

// follow reads the stream until it ends; it reports whether the stream was established (the
// agent answered 200).
func follow(ctx context.Context, client *http.Client, cfg *FollowConfig, again bool) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.URL, nil)
	if err != nil {
		return false, errFatal{err}
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := fmt.Errorf("%s: %s: %s", cfg.URL, resp.Status, bytes.TrimSpace(b))
		if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusNotFound {
			return false, errFatal{err}
		}
		return false, err
	}
	if again {
		cfg.Log("connected to " + cfg.URL)
	}
	rd := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := rd.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			if perr := cfg.Line(line); perr != nil {
				return true, errFatal{perr}
			}
		}
		if rd.Buffered() == 0 || err != nil {
			if ferr := cfg.Flush(); ferr != nil {
				return true, errFatal{ferr}
			}
		}
		if err == io.EOF {
			return true, errors.New("the agent ended the stream")
		}
		if err != nil {
			return true, err
		}
	}
}
