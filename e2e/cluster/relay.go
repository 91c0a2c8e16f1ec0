package cluster

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// Relay forwards every connection accepted on ln to the API server, byte for byte (TLS
// passes through: clients verify the API server's certificate, which names 127.0.0.1).
//
// It exists for clients in another network namespace: the API server listens on 127.0.0.1
// of the test's own namespace, which a lab node cannot reach, and the lab rules forbid
// adding addresses or routes there. A listener opened inside the node's namespace (lab's
// NS.Do) on 127.0.0.1:6443, relayed here, gives the node's agent the API server at
// https://127.0.0.1:6443 while the lab stays sealed: the relay's outgoing connections are
// made by this process in the API server's namespace (its own, or Options.Netns). Close the
// returned Closer to stop accepting and cut every relayed connection.
//
// A Cluster started in a namespace (Options.Netns) relays the other way by itself: its Addr
// is a relay on 127.0.0.1 of the test's namespace whose connections are made in Netns.
func (c *Cluster) Relay(ln net.Listener) io.Closer {
	r := &relay{ln: ln, dial: func() (net.Conn, error) { return c.dial(context.Background(), "tcp", c.Listen) },
		conns: map[net.Conn]struct{}{}}
	go r.serve()
	return r
}

type relay struct {
	ln   net.Listener
	dial func() (net.Conn, error) // to the API server

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (r *relay) serve() {
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return
		}
		go r.forward(in)
	}
}

func (r *relay) forward(in net.Conn) {
	out, err := r.dial()
	if err != nil {
		in.Close() // the API server is down: the client sees its connection cut
		return
	}
	if !r.track(in, out) {
		in.Close()
		out.Close()
		return
	}
	// When either side ends, both do: a killed API server cuts its clients at once, as a
	// direct connection would.
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	in.Close()
	out.Close()
	<-done
	r.untrack(in, out)
}

func (r *relay) track(conns ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	for _, c := range conns {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *relay) untrack(conns ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range conns {
		delete(r.conns, c)
	}
}

func (r *relay) Close() error {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	err := r.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
