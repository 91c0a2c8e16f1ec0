package manifests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// This file splits a manifest file into documents (YAML between "---" lines, or JSON values)
// and a List into its items, keeping every object's file:line for errors.

// doc is one document of a file, as JSON: YAML between "---" lines, or one JSON value.
type doc struct {
	file  string
	index int // 1-based, counting documents that hold something
	line  int // its first line that is not blank or a comment
	json  []byte
	list  *yamlList // instead of json: a YAML List read entry by entry
}

// splitYAML splits data at "---" lines and converts each document to JSON, skipping
// documents that hold only blank lines and comments. A List in block style is split
// further, for reading entry by entry (yamlList).
func (l *loader) splitYAML(name string, data []byte) []doc {
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	var docs []doc
	index := 0
	start, startLine := 0, 1 // of the current document
	flush := func(end int) {
		text := data[start:end]
		first := firstContentLine(text, startLine)
		if first == 0 {
			return
		}
		index++
		if lst := l.splitList(text); lst != nil {
			lst.text, lst.startLine, lst.errAt = text, startLine, len(l.errors)
			docs = append(docs, doc{file: name, index: index, line: first, list: lst})
			return
		}
		j, err := yamlToJSON(name, index, first, startLine, text)
		if err != nil {
			l.errors = append(l.errors, err)
			return
		}
		if string(j) != "null" {
			docs = append(docs, doc{file: name, index: index, line: first, json: j})
		}
	}
	line := 1
	for off := 0; off < len(data); line++ {
		next := len(data)
		if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
			next = off + i + 1
		}
		text := data[off:next]
		off = next
		rest, ok := bytes.CutPrefix(bytes.TrimRight(text, "\r\n"), []byte("---"))
		if !ok || len(rest) > 0 && rest[0] != ' ' && rest[0] != '\t' {
			continue // not a separator ("----" is a scalar)
		}
		if r := bytes.TrimSpace(rest); len(r) > 0 && r[0] != '#' {
			l.errors = append(l.errors, fmt.Errorf("%s:%d: content after a document separator is not supported: start the document on the next line", name, line))
		}
		flush(off - len(text))
		start, startLine = off, line+1
	}
	flush(len(data))
	return docs
}

// yamlToJSON converts one YAML document, text, to JSON. Its problem names file:line (first,
// the document's first line that holds something) and the document, with the parser's line
// numbers made the file's (text starts at startLine).
func yamlToJSON(name string, index, first, startLine int, text []byte) ([]byte, error) {
	j, err := yaml.YAMLToJSONStrict(text)
	if err != nil {
		// One line per problem: "yaml: unmarshal errors:\n  line 4: ..." becomes one line,
		// and the parser's line numbers, counted from the document, become the file's.
		msg := strings.Join(strings.Fields(strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")), " ")
		msg = fileLines(msg, startLine-1)
		return nil, fmt.Errorf("%s:%d: document %d: invalid YAML: %s", name, first, index, msg)
	}
	return j, nil
}

var yamlLine = regexp.MustCompile(`\bline (\d+)`)

// fileLines adds offset to every "line N" of a YAML parser message.
func fileLines(msg string, offset int) string {
	return yamlLine.ReplaceAllStringFunc(msg, func(m string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
		return "line " + strconv.Itoa(n+offset)
	})
}

// firstContentLine returns the number of the first line of b, which starts at line, that is
// neither blank nor a comment, or 0 when there is none.
func firstContentLine(b []byte, line int) int {
	for ; len(b) > 0; line++ {
		text, rest, _ := bytes.Cut(b, []byte("\n"))
		if t := bytes.TrimSpace(text); len(t) > 0 && t[0] != '#' {
			return line
		}
		b = rest
	}
	return 0
}

// splitJSON splits data into its JSON values, which stay in data.
func (l *loader) splitJSON(name string, data []byte) []doc {
	var docs []doc
	dec := json.NewDecoder(bytes.NewReader(data))
	for index := 1; ; index++ {
		start := int(dec.InputOffset())
		err := dec.Decode(new(skipValue))
		if err == io.EOF {
			return docs
		}
		if err != nil {
			off := int(dec.InputOffset())
			var se *json.SyntaxError
			if errors.As(err, &se) {
				off = int(se.Offset)
			}
			l.errors = append(l.errors, fmt.Errorf("%s:%d: document %d: invalid JSON: %v", name, lineAt(data, off), index, err))
			return docs
		}
		start += len(data[start:]) - len(bytes.TrimLeft(data[start:], " \t\r\n"))
		docs = append(docs, doc{file: name, index: index, line: lineAt(data, start), json: data[start:dec.InputOffset()]})
	}
}

// skipValue decodes any JSON value into nothing.
type skipValue struct{}

func (*skipValue) UnmarshalJSON([]byte) error { return nil }

// lineAt returns the line number of byte offset off of data.
func lineAt(data []byte, off int) int {
	return bytes.Count(data[:min(off, len(data))], []byte("\n")) + 1
}

// listEnvelope decodes a List strictly and returns its items; it reports false when the
// List is refused.
func (l *loader) listEnvelope(o *object, data []byte) ([]json.RawMessage, bool) {
	var lst struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ListMeta   `json:"metadata"`
		Items      []json.RawMessage `json:"items"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&lst); err != nil {
		l.errorf(o, "%v", err)
		return nil, false
	}
	return lst.Items, true
}

// yamlList is a YAML document holding a List in block style, split by splitList so that
// its entries convert to JSON one at a time: converting a document holds all of it as
// generic values at once, which for a List of 11k objects (6.8 MB) took 250 MB.
type yamlList struct {
	envelope []byte   // JSON of the document with "items: []" for the entries
	entries  [][]byte // the YAML of each entry, as in the document: "- " and what follows

	// For reading the document whole when an entry does not convert alone (an alias of
	// another entry's anchor, a broken entry):
	text      []byte // the document
	startLine int    // the line of the file text starts at
	errAt     int    // the index in loader.errors its conversion problem belongs at
}

// splitList splits a YAML document holding a List in block style: an "items:" line in the
// first column, followed by entries each starting with "- " in one column, up to a line
// in the first column. It returns nil for any other document, and when the pieces do not
// read as the whole would: the envelope must convert, alone, to a List with "items": [].
//
// That suffices for the entries to read alone as they would in the document: every entry
// starts at the same column, so an entry ends where a new one starts, at a line that ends
// any scalar or block collection still open; a quoted scalar or flow collection running
// past it would leave the entry before unterminated, which yamlList finds.
func (l *loader) splitList(text []byte) *yamlList {
	if l.wholeLists {
		return nil
	}
	var (
		lst                yamlList
		itemsAt            = -1 // the "items:" line
		col, entry, region = -1, -1, len(text)
	)
loop:
	for off := 0; off < len(text); {
		next := len(text)
		if i := bytes.IndexByte(text[off:], '\n'); i >= 0 {
			next = off + i + 1
		}
		line := bytes.TrimRight(text[off:next], "\r\n")
		lineAt := off
		off = next
		if itemsAt < 0 {
			if rest, ok := bytes.CutPrefix(line, []byte("items:")); ok {
				if r := bytes.TrimLeft(rest, " \t"); len(r) == 0 || len(rest) > len(r) && r[0] == '#' {
					itemsAt = lineAt
				}
			}
			continue
		}
		if t := bytes.TrimLeft(line, " \t"); len(t) == 0 || t[0] == '#' {
			continue // blank or a comment: part of the entry it follows
		}
		indent := len(line) - len(bytes.TrimLeft(line, " "))
		dash := line[indent] == '-' && (len(line) == indent+1 || line[indent+1] == ' ' || line[indent+1] == '\t')
		switch {
		case col < 0 && !dash:
			return nil // items is not a block sequence
		case col < 0:
			col, entry = indent, lineAt
		case indent > col:
			// inside the entry
		case indent == col && dash:
			lst.entries = append(lst.entries, text[entry:lineAt])
			entry = lineAt
		case indent == 0:
			region = lineAt
			break loop
		default:
			return nil // less indented than the entries, not in the first column
		}
	}
	if entry < 0 {
		return nil
	}
	lst.entries = append(lst.entries, text[entry:region])

	envelope := make([]byte, 0, itemsAt+len(text)-region+len("items: []\n"))
	envelope = append(append(append(envelope, text[:itemsAt]...), "items: []\n"...), text[region:]...)
	j, err := yaml.YAMLToJSONStrict(envelope)
	if err != nil {
		return nil
	}
	var h head
	var fields map[string]json.RawMessage
	if json.Unmarshal(j, &h) != nil || json.Unmarshal(j, &fields) != nil || string(fields["items"]) != "[]" {
		return nil
	}
	if _, known := apiVersions[h.Kind]; !known || !strings.HasSuffix(h.Kind, "List") {
		return nil
	}
	lst.envelope = j
	return &lst
}

// yamlList reads a List split by splitList: the envelope as object reads a List, then each
// entry converted to JSON alone, in turn. It reports false when an entry does not convert
// alone, having undone what it recorded of the List: the caller then reads the document
// whole, as before it was split.
func (l *loader) yamlList(o *object, lst *yamlList) bool {
	m := l.mark()
	ok := l.identify(o, lst.envelope, "")
	if ok {
		_, ok = l.listEnvelope(o, lst.envelope)
	}
	for i, e := range lst.entries {
		j, err := yaml.YAMLToJSONStrict(e)
		var item []json.RawMessage
		if err != nil || json.Unmarshal(j, &item) != nil || len(item) != 1 {
			// Read whole, the document would fail to convert (or convert otherwise), and
			// report that instead of anything the envelope or entries before did.
			l.rollback(m, o)
			return false
		}
		if ok { // a refused List is still converted whole: broken YAML is the first problem
			l.object(o.inList(i), item[0], o.kind)
		}
	}
	return true
}
