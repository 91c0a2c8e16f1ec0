package decisions

import (
	"bufio"
	_ "embed"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Stream serving knobs.
const (
	// batch is the most records written between two flushes.
	batch = 64
	// lossEvery is how often an idle stream checks for and reports lost records.
	lossEvery = time.Second
	// keepaliveEvery is how often an idle SSE stream sends a comment, so that proxies and
	// browsers keep it open.
	keepaliveEvery = 15 * time.Second
	// writeTimeout bounds the write of one batch: a client that reads nothing for that long
	// is disconnected (its records were being dropped anyway).
	writeTimeout = 30 * time.Second
)

// Handler serves the stream of h (GET /debug/decisions): NDJSON (application/x-ndjson), or
// Server-Sent Events when the request accepts text/event-stream. Query parameters: the
// filter (namespace, pod, verdict, direction, policy) and buffer, the number of records the
// subscriber's buffer holds (default DefaultBuffer). The subscription exists once the
// response headers are sent; records are written as they come, flushed at least once per
// 64 records, and losses are reported in a {"type":"dropped","count":N} line.
func Handler(h *Hub) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f, err := ParseFilter(q)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n := 0
		if b := q.Get("buffer"); b != "" {
			if n, err = strconv.Atoi(b); err != nil || n < 1 {
				http.Error(w, "buffer: want a positive number of records", http.StatusBadRequest)
				return
			}
		}
		sub, err := h.Subscribe(f, n)
		if errors.Is(err, ErrTooManySubscribers) {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer sub.Close()
		serve(w, r, sub, wantsSSE(r))
	})
}

// wantsSSE reports whether the request's Accept header asks for text/event-stream.
func wantsSSE(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/event-stream" {
			return true
		}
	}
	return false
}

func serve(w http.ResponseWriter, r *http.Request, sub *Subscription, sse bool) {
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Accel-Buffering", "no")
	if sse {
		hd.Set("Content-Type", "text/event-stream; charset=utf-8")
	} else {
		hd.Set("Content-Type", "application/x-ndjson")
	}
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	enc := &encoder{w: bw, sse: sse, frags: fragments{s: sub}}
	if sse {
		bw.WriteString("retry: 2000\n\n")
	}
	if bw.Flush() != nil || rc.Flush() != nil {
		return
	}
	loss := time.NewTicker(lossEvery)
	defer loss.Stop()
	idle := time.Now()
	for {
		var rec Record
		select {
		case <-r.Context().Done():
			return
		case rec = <-sub.C():
			if !arm(rc) {
				return
			}
		case <-loss.C:
			if !arm(rc) {
				return
			}
			n := sub.Lost()
			switch {
			case n > 0:
				enc.dropped(n)
			case sse && time.Since(idle) >= keepaliveEvery:
				bw.WriteString(": keepalive\n\n")
			default:
				continue
			}
			if !flush(bw, rc) {
				return
			}
			idle = time.Now()
			continue
		}
		// A batch: this record and whatever else is already buffered, up to batch.
		for i := 1; ; i++ {
			enc.record(&rec)
			if i == batch {
				break
			}
			var more bool // the channel is never closed: more means a record came
			select {
			case rec, more = <-sub.C():
			default:
			}
			if !more {
				break
			}
		}
		if n := sub.Lost(); n > 0 {
			enc.dropped(n)
		}
		if !flush(bw, rc) {
			return
		}
		idle = time.Now()
	}
}

// arm gives the writes that follow writeTimeout to complete; the buffered writer may write
// before flush.
func arm(rc *http.ResponseController) bool {
	err := rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return err == nil || errors.Is(err, http.ErrNotSupported)
}

func flush(bw *bufio.Writer, rc *http.ResponseController) bool {
	return bw.Flush() == nil && rc.Flush() == nil
}

// encoder writes records as NDJSON lines or SSE messages ("event: decision" or "event:
// dropped", the same JSON as data).
type encoder struct {
	w     *bufio.Writer
	sse   bool
	buf   []byte
	frags fragments
}

// record writes r when it passes the Policy filter. The bytes are those of
// json.Marshal(r.Event()).
func (e *encoder) record(r *Record) {
	f := e.frags.of(r)
	if !f.match {
		return
	}
	b := e.buf[:0]
	if e.sse {
		b = append(b, "event: "+TypeDecision+"\ndata: "...)
	}
	b = append(b, `{"type":"`+TypeDecision+`","time":`...)
	b = appendTime(b, r.Time)
	b = f.append(b, r.SrcPort, r.CacheHit, r.Latency.Nanoseconds(), r.Queue, r.kernel())
	e.buf = e.end(b)
	e.w.Write(e.buf)
}

func (e *encoder) dropped(n uint64) {
	b := e.buf[:0]
	if e.sse {
		b = append(b, "event: "+TypeDropped+"\ndata: "...)
	}
	b = append(b, `{"type":"`+TypeDropped+`","count":`...)
	b = strconv.AppendUint(b, n, 10)
	e.buf = e.end(append(b, '}'))
	e.w.Write(e.buf)
}

func (e *encoder) end(b []byte) []byte {
	if e.sse {
		return append(b, "\n\n"...)
	}
	return append(b, '\n')
}

//go:embed page.html
var page []byte

// Page serves the live page (GET /debug/): one self-contained HTML document that follows
// /debug/decisions over SSE, with filters, colours, counts per policy and per pod pair,
// pause and resume. It loads nothing else.
func Page() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Type", "text/html; charset=utf-8")
		hd.Set("Cache-Control", "no-cache")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
		w.Write(page)
	})
}
