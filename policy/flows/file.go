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

// File is the flow log on disk: an O_APPEND file written one whole line per Write call, and
// rotated by renaming when the next line would make it larger than its maximum size: path
// becomes path.1, path.1 path.2, …, up to path.N (MaxFiles); the oldest is replaced. A log
// shipper that follows path by name (Fluent Bit's tail input, Vector's file source) reads
// each rotated file to its end and then the new one.
//
// It never calls fsync. Each line is one write(2), so a reader never sees half a line
// written by a live writer, and a killed one leaves at most its last line partial (the
// kernel stops a write between pages for a fatal signal); OpenFile cuts that tail off.
type File struct {
	path     string
	maxSize  int64
	maxFiles int

	mu        sync.Mutex
	f         *os.File
	size      int64
	rotations atomic.Uint64
}

// OpenFile opens (creating it) the flow log at path for appending. maxSize bounds a file in
// bytes (a single longer line is written whole to an empty file); maxFiles is how many
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

// Write writes one whole line (the caller's p ends with a newline) with one write call,
// rotating first when p would make the file larger than its maximum size.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		if err := l.open(); err != nil { // a failed rotation: try again
			return 0, err
		}
	}
	if l.size > 0 && l.size+int64(len(p)) > l.maxSize {
		if err := l.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

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
