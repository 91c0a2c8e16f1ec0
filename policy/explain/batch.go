package explain

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/podwall/podwall/policy"
)

// Batch answers JSON-lines queries from in with one JSON line each on out, and returns how
// many were bad (their answer carries "error", prefixed with the line number, also handed to
// report). It flushes whenever it has consumed all input available so far, so it serves a
// pipeline as well as a line-by-line coprocess. The error is about reading or writing.
func Batch(s *policy.Snapshot, in io.Reader, out io.Writer, report func(msg string)) (bad int, err error) {
	return BatchStaged(s, nil, in, out, report)
}

// BatchStaged is Batch whose answers also carry what the staged policies of p would make of
// each query (Answer.Staged) when p is not nil.
func BatchStaged(s *policy.Snapshot, p *Proposal, in io.Reader, out io.Writer, report func(msg string)) (bad int, err error) {
	rd := bufio.NewReaderSize(in, 1<<16)
	w := bufio.NewWriterSize(out, 1<<16)
	enc := json.NewEncoder(w)
	for lineNo := 1; ; lineNo++ {
		line, rerr := rd.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			a := answerLine(s, p, line)
			if a.Error != "" {
				a.Error = fmt.Sprintf("line %d: %s", lineNo, a.Error)
				bad++
				report(a.Error)
			}
			if err := enc.Encode(a); err != nil {
				return bad, err
			}
		}
		if rd.Buffered() == 0 || rerr != nil {
			if err := w.Flush(); err != nil {
				return bad, err
			}
		}
		if rerr == io.EOF {
			return bad, nil
		}
		if rerr != nil {
			return bad, rerr
		}
	}
}

func answerLine(s *policy.Snapshot, p *Proposal, line []byte) Answer {
	var q Query
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&q); err != nil {
		return Answer{Error: err.Error()}
	}
	return JudgeStaged(s, p, q)
}
