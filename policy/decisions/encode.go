package decisions

import (
	"strconv"
	"time"
	"unicode/utf8"
	"weak"

	"github.com/podwall/podwall/policy/explain"
	"github.com/podwall/podwall/policy/flow"
)

// Encoding a decision is the subscriber's work: it competes for CPU with the datapath, so it
// is done by hand (the bytes encoding/json would write, without reflection) and what depends
// only on the flow is kept per subscriber: a retransmitted SYN, a UDP stream or a client
// retrying costs a lookup and a few numbers, not an explanation.

// AppendJSON appends e as JSON: the same bytes as json.Marshal(e).
func AppendJSON(b []byte, e *Event) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, e.Type)
	b = append(b, `,"time":`...)
	b = appendTime(b, e.Time)
	var f fragment
	f.build(e)
	return f.append(b, e.SrcPort, e.CacheHit, e.LatencyNs, e.Queue, kernelCached{e.KernelDenyTTLms, e.KernelAllowTTLms})
}

// kernelCached is what a record says about the kernel's verdict caches: the TTLs in
// milliseconds of the deny and the allow cache when its flow went into one.
type kernelCached struct{ denyTTLms, allowTTLms int64 }

func (r *Record) kernel() kernelCached {
	return kernelCached{r.KernelDenyTTL.Milliseconds(), r.KernelAllowTTL.Milliseconds()}
}

// fragment is an encoded event less its per-packet fields (type, time, srcPort, cacheHit,
// latencyNs, queue, kernelDenyTTLms, kernelAllowTTLms): what the flow, the verdict and the snapshot decide.
// srcPort goes at cut[0], the others at cut[1].
type fragment struct {
	b     []byte
	cut   [2]int
	match bool // the subscriber's Policy filter
}

func (f *fragment) build(e *Event) {
	b := f.b[:0]
	if b == nil {
		b = make([]byte, 0, 768)
	}
	if e.Node != "" {
		b = append(b, `,"node":`...)
		b = appendString(b, e.Node)
	}
	b = append(b, `,"family":`...)
	b = appendString(b, e.Family)
	b = append(b, `,"protocol":`...)
	b = appendString(b, e.Protocol)
	b = append(b, `,"src":`...)
	b = appendString(b, e.Src)
	f.cut[0] = len(b)
	b = append(b, `,"dst":`...)
	b = appendString(b, e.Dst)
	b = append(b, `,"dstPort":`...)
	b = strconv.AppendUint(b, uint64(e.DstPort), 10)
	if e.SrcPod != "" {
		b = append(b, `,"srcPod":`...)
		b = appendString(b, e.SrcPod)
	}
	if e.DstPod != "" {
		b = append(b, `,"dstPod":`...)
		b = appendString(b, e.DstPod)
	}
	b = append(b, `,"verdict":`...)
	b = appendString(b, e.Verdict)
	b = append(b, `,"reason":`...)
	b = appendString(b, e.Reason)
	b = appendStrings(b, `,"policies":`, e.Policies)
	b = appendJudgement(b, `,"egress":`, e.Egress)
	b = appendJudgement(b, `,"ingress":`, e.Ingress)
	f.cut[1] = len(b)
	b = append(b, `,"generation":`...)
	b = strconv.AppendUint(b, e.Generation, 10)
	if e.Malformed != "" {
		b = append(b, `,"malformed":`...)
		b = appendString(b, e.Malformed)
	}
	if e.Count != 0 {
		b = append(b, `,"count":`...)
		b = strconv.AppendUint(b, e.Count, 10)
	}
	if st := e.Staged; st != nil {
		b = append(b, `,"staged":{"verdict":`...)
		b = appendString(b, st.Verdict)
		b = append(b, `,"reason":`...)
		b = appendString(b, st.Reason)
		b = append(b, `,"policies":[`...)
		for i, p := range st.Policies {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, p)
		}
		b = append(b, "]}"...)
	}
	f.b = b
}

// append appends the fragment with the per-packet fields to b, which holds `{"type":…,"time":…`.
// kernelDenyTTLms is left out when 0 (omitempty).
func (f *fragment) append(b []byte, srcPort uint16, cacheHit bool, latencyNs int64, queue uint16, k kernelCached) []byte {
	b = append(b, f.b[:f.cut[0]]...)
	b = append(b, `,"srcPort":`...)
	b = strconv.AppendUint(b, uint64(srcPort), 10)
	b = append(b, f.b[f.cut[0]:f.cut[1]]...)
	b = append(b, `,"cacheHit":`...)
	b = strconv.AppendBool(b, cacheHit)
	b = append(b, `,"latencyNs":`...)
	b = strconv.AppendInt(b, latencyNs, 10)
	b = append(b, `,"queue":`...)
	b = strconv.AppendUint(b, uint64(queue), 10)
	if k.denyTTLms != 0 {
		b = append(b, `,"kernelDenyTTLms":`...)
		b = strconv.AppendInt(b, k.denyTTLms, 10)
	}
	if k.allowTTLms != 0 {
		b = append(b, `,"kernelAllowTTLms":`...)
		b = strconv.AppendInt(b, k.allowTTLms, 10)
	}
	b = append(b, f.b[f.cut[1]:]...)
	return append(b, '}')
}

func appendJudgement(b []byte, key string, j *explain.Judgement) []byte {
	if j == nil {
		return b
	}
	b = append(b, key...)
	b = append(b, `{"verdict":`...)
	b = appendString(b, j.Verdict)
	b = append(b, `,"code":`...)
	b = appendString(b, j.Code)
	if j.Pod != "" {
		b = append(b, `,"pod":`...)
		b = appendString(b, j.Pod)
	}
	b = append(b, `,"local":`...)
	b = strconv.AppendBool(b, j.Local)
	b = appendStrings(b, `,"policies":`, j.Policies)
	if len(j.AllowedBy) > 0 {
		b = append(b, `,"allowedBy":[`...)
		for i, r := range j.AllowedBy {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"policy":`...)
			b = appendString(b, r.Policy)
			b = append(b, `,"rule":`...)
			b = strconv.AppendInt(b, int64(r.Rule), 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = appendStrings(b, `,"isolatedBy":`, j.IsolatedBy)
	b = append(b, `,"reason":`...)
	b = appendString(b, j.Reason)
	return append(b, '}')
}

// appendStrings appends key and a string list, or nothing for an empty one (omitempty).
func appendStrings(b []byte, key string, ss []string) []byte {
	if len(ss) == 0 {
		return b
	}
	b = append(b, key...)
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hex = "0123456789abcdef"

// safe holds the ASCII bytes a JSON string carries as they are (encoding/json's htmlSafeSet).
var safe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString appends s as a JSON string escaped as encoding/json does (HTML-safe: <, >
// and & as \u003c, \u003e, \u0026; U+2028 and U+2029 escaped; invalid UTF-8 as \ufffd).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if safe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// fragments caches the fragments of one subscriber by what they depend on. It is cleared
// when full: a flood of distinct flows then costs what it would without a cache.
type fragments struct {
	m map[fragmentKey]*fragment
	s *Subscription
}

// fragmentKey is what a fragment depends on. The generation, not the snapshot, so that the
// cache pins no snapshot (a generation's explanation never changes).
type fragmentKey struct {
	gen   uint64
	flow  flow.Flow
	allow bool
	// staged: the staged verdict (0 none, 1 deny, 2 allow) and the proposal that gave it.
	staged   uint8
	proposal weak.Pointer[explain.Proposal]
}

const maxFragments = 1024 // about 1 MiB per subscriber

// of returns the fragment of a record, from the cache or made now. Records of malformed
// packets are not cached.
func (c *fragments) of(r *Record) *fragment {
	if r.Malformed != nil {
		return c.make(r)
	}
	k := fragmentKey{gen: r.Generation, flow: r.Flow, allow: r.Allow}
	if r.Staged.Set {
		k.staged, k.proposal = 1, r.Staged.Proposal
		if r.Staged.Allow {
			k.staged = 2
		}
	}
	if f := c.m[k]; f != nil {
		return f
	}
	if c.m == nil || len(c.m) >= maxFragments {
		c.m = make(map[fragmentKey]*fragment, 256)
	}
	f := c.make(r)
	c.m[k] = f
	return f
}

func (c *fragments) make(r *Record) *fragment {
	e := r.Event()
	f := &fragment{match: c.s.Match(&e)}
	f.build(&e)
	return f
}
