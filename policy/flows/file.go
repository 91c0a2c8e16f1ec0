package flows

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
)

// File is the flow log on disk: an O_APPEND file written one line per write(2), and rotated
// by renaming when the next line would make it larger than its maximum size: path becomes
// path.1, path.1 path.2, …, up to path.N (MaxFiles); the oldest is replaced. A log shipper
// that follows path by name (Fluent Bit's tail input, Vector's file source) reads each
// rotated file to its end and then the new one.
//
// It never calls fsync, and it never leaves a torn line, even when the process is killed:
// one write(2) per line is not enough for that, since the kernel cuts a write short at a page
// boundary of the file when a fatal signal (SIGKILL, the OOM killer) is pending
// (generic_perform_write; TestNoTornLinesAfterSIGKILL saw it about once in 100 kills). So no
// line crosses a 4 KiB boundary of the file: when the next line of a batch would, the line
// before it is widened with spaces (JSON allows trailing whitespace) to end at the boundary,
// and the last line of each batch is widened to the boundary too, so that the next batch
// starts on one. A line longer than 4 KiB, or the first one after OpenFile when the file ends
// mid-page, can still cross; OpenFile cuts a partial last line off before writing again.
// Widening costs half a line per page on average and up to a page per batch.
type File struct {
	path     string
	maxSize  int64
	maxFiles int

	mu        sync.Mutex
	f         *os.File
	size      int64
	buf       []byte // a widened line
	rotations atomic.Uint64
}

// OpenFile opens (creating it) the flow log at path for appending. maxSize bounds a file in
// bytes (a single longer line is written whole to an empty file; widening never makes a
// file larger than maxSize); maxFiles is how many
// rotated files are kept (0: none, the full file is removed). A partial last line, left by a
// writer killed mid-write, is cut off.
func OpenFile(path string, maxSize int64, maxFiles int) (*File, error) {
	if maxSize <= 0 {
		return nil, fmt.Errorf("flow log %s: maximum size %d: want > 0", path, maxSize)
	}
	if maxFiles < 0 {
		return nil, fmt.Errorf("flow log %s: files to keep %d: want ≥ 0", path, maxFiles)
	}
	l := &File{path: path, maxSize: maxSize, maxFiles: maxFiles}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *File) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("flow log: %w", err)
	}
	size, err := cutPartialLine(f, l.path)
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, size
	return nil
}

// cutPartialLine truncates the file after its last newline and returns its size.
func cutPartialLine(f *os.File, path string) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("flow log: %w", err)
	}
	size := fi.Size()
	if size == 0 {
		return 0, nil
	}
	r, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("flow log: %w", err)
	}
	defer r.Close()
	// Scan back from the end for the last newline, a block at a time.
	const block = 64 << 10
	buf := make([]byte, block)
	for end := size; end > 0; {
		start := max(end-block, 0)
		n, err := r.ReadAt(buf[:end-start], start)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("flow log: %w", err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			keep := start + int64(i) + 1
			if keep == size {
				return size, nil
			}
			return keep, truncate(f, keep)
		}
		end = start
	}
	return 0, truncate(f, 0) // no newline at all: one partial line
}

func truncate(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("flow log: cutting a partial last line: %w", err)
	}
	return nil
}

// page is the boundary no line crosses (see File): the smallest page a file's cache uses.
const page = 4096

// Write writes a batch of whole lines (p ends with a newline), each with one write call,
// rotating first when a line would make the file larger than its maximum size, and widening
// lines so that none crosses a page boundary (see File). It returns the bytes of p written,
// not counting the padding.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		if err := l.open(); err != nil { // a failed rotation: try again
			return 0, err
		}
	}
	written := 0
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return written, errors.New("flow log: a line without a newline")
		}
		line, rest := p[:i+1], p[i+1:]
		if l.size > 0 && l.size+int64(len(line)) > l.maxSize {
			if err := l.rotate(); err != nil {
				return written, err
			}
		}
		// Widen the line to the page boundary when it is the batch's last or the next line
		// would not fit in what is left of the page.
		out := line
		if room := page - l.size%page; int64(len(line)) <= room {
			left := room - int64(len(line))
			next := bytes.IndexByte(rest, '\n') + 1
			if left > 0 && (next == 0 || int64(next) > left) && l.size+room <= l.maxSize {
				l.buf = append(append(append(l.buf[:0], line[:len(line)-1]...), spaces(int(left))...), '\n')
				out = l.buf
			}
		}
		n, err := l.f.Write(out)
		l.size += int64(n)
		if err != nil {
			return written + min(n, len(line)), err
		}
		written += len(line)
		p = rest
	}
	return written, nil
}

var blank = bytes.Repeat([]byte{' '}, page)

func spaces(n int) []byte { return blank[:n] }

// rotate renames path.i to path.i+1 (the oldest, path.N, is replaced), path to path.1, and
// opens a new path.
func (l *File) rotate() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("flow log: %w", err)
	}
	l.f = nil
	var err error
	if l.maxFiles == 0 {
		err = os.Remove(l.path)
	} else {
		for i := l.maxFiles - 1; i >= 1; i-- {
			if e := os.Rename(l.name(i), l.name(i+1)); e != nil && !errors.Is(e, fs.ErrNotExist) {
				return fmt.Errorf("flow log: rotating: %w", e)
			}
		}
		err = os.Rename(l.path, l.name(1))
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("flow log: rotating: %w", err)
	}
	l.rotations.Add(1)
	return l.open()
}

func (l *File) name(i int) string { return l.path + "." + strconv.Itoa(i) }

// Rotations returns the number of rotations so far.
func (l *File) Rotations() uint64 { return l.rotations.Load() }

// Close closes the file.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
