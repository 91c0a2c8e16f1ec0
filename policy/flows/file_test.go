package flows

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// testLine is a numbered line: writer w's n-th, padded to a length that varies, so lines
// cross the file's pages at every offset.
type testLine struct {
	W, N int
	Pad  string
}

func makeLine(w, n int) []byte {
	b, _ := json.Marshal(testLine{w, n, strings.Repeat("x", (n*37+w*101)%1500)})
	return append(b, '\n')
}

// readLog reads the flow log's files, oldest first, and checks that each line is whole
// JSON and each file ends with a newline.
func readLog(t *testing.T, path string, maxFiles int) (lines [][]byte, files int) {
	t.Helper()
	for i := maxFiles + 3; i >= 0; i-- { // a few past maxFiles: none may exist
		name := path
		if i > 0 {
			name = path + "." + strconv.Itoa(i)
		}
		data, err := os.ReadFile(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if i > maxFiles {
			t.Errorf("%s exists: at most %d rotated files", name, maxFiles)
		}
		files++
		if len(data) > 0 && data[len(data)-1] != '\n' {
			t.Errorf("%s ends in a partial line: %q", name, tail(data))
		}
		for l := range bytes.Lines(data) {
			if !json.Valid(l) {
				t.Errorf("%s: torn line %q", name, tail(l))
			}
			lines = append(lines, l)
		}
	}
	return lines, files
}

func tail(b []byte) []byte { return b[max(0, len(b)-80):] }

// Many writers at once through one File with a small maximum size: every kept file is at
// most that size, at most MaxFiles rotated files exist, every line is whole, and the kept
// files hold, oldest to newest, each writer's last lines without a gap.
func TestFileRotationUnderLoad(t *testing.T) {
	const maxSize, maxFiles, writers, perWriter = 32 << 10, 3, 4, 1000
	path := filepath.Join(t.TempDir(), "flows.log")
	f, err := OpenFile(path, maxSize, maxFiles)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for n := 0; n < perWriter; n += 10 {
				var batch []byte
				for k := n; k < n+10; k++ {
					batch = append(batch, makeLine(w, k)...)
				}
				if _, err := f.Write(batch); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range maxFiles + 1 {
		name := path
		if i > 0 {
			name = path + "." + strconv.Itoa(i)
		}
		if fi, err := os.Stat(name); err != nil || fi.Size() > maxSize {
			t.Errorf("%s: %v, size over %d", name, err, maxSize)
		}
	}
	lines, files := readLog(t, path, maxFiles)
	if files != maxFiles+1 {
		t.Errorf("%d files, want %d", files, maxFiles+1)
	}
	next := map[int]int{}
	for _, l := range lines {
		var tl testLine
		if err := json.Unmarshal(l, &tl); err != nil {
			t.Fatal(err)
		}
		if n, ok := next[tl.W]; ok && tl.N != n {
			t.Fatalf("writer %d: line %d follows %d", tl.W, tl.N, n-1)
		}
		next[tl.W] = tl.N + 1
	}
	if len(next) == 0 {
		t.Fatal("no lines kept")
	}
	for w, n := range next { // a writer that finished early may have all its lines rotated out
		if n != perWriter {
			t.Errorf("writer %d: the newest line kept is %d, want %d", w, n-1, perWriter-1)
		}
	}
	if f.Rotations() < 10 {
		t.Errorf("%d rotations: the test wrote too little", f.Rotations())
	}
}

// A partial last line (a writer killed mid-line) is cut off when the log is opened again,
// so that the next line does not continue it.
func TestOpenFileCutsPartialLine(t *testing.T) {
	for _, tc := range []struct{ name, before, after string }{
		{"partial after lines", "{\"a\":1}\n{\"b\":2}\n{\"c\"", "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n"},
		{"only partial", "{\"c\":", "{\"d\":4}\n"},
		{"whole", "{\"a\":1}\n", "{\"a\":1}\n{\"d\":4}\n"},
		{"empty", "", "{\"d\":4}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "flows.log")
			if err := os.WriteFile(path, []byte(tc.before), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := OpenFile(path, 1<<20, 1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write([]byte("{\"d\":4}\n")); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if got, _ := os.ReadFile(path); string(trailingSpaces.ReplaceAll(got, []byte("\n"))) != tc.after {
				t.Errorf("log %q, want %q", got, tc.after)
			}
		})
	}
}

var trailingSpaces = regexp.MustCompile(` +\n`)

// No line of 4 KiB or less crosses a page boundary of the file, so that a killed writer
// cannot leave half of one (see File); the padding is trailing spaces, and each line is still
// the JSON written.
func TestFileLinesNeverCrossPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.log")
	f, err := OpenFile(path, 1<<30, 1)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for b := range 200 {
		var batch []byte
		for k := range b%13 + 1 {
			l := makeLine(b, k)
			want = append(want, string(l))
			batch = append(batch, l...)
		}
		if n, err := f.Write(batch); err != nil || n != len(batch) {
			t.Fatalf("batch %d: wrote %d of %d: %v", b, n, len(batch), err)
		}
	}
	f.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	off := 0
	for l := range bytes.Lines(data) {
		if off/page != (off+len(l)-1)/page {
			t.Errorf("line at %d-%d crosses a page boundary", off, off+len(l))
		}
		off += len(l)
		if !json.Valid(l) {
			t.Errorf("line at %d is not JSON", off)
		}
		got = append(got, string(trailingSpaces.ReplaceAll(l, []byte("\n"))))
	}
	if !slices.Equal(got, want) {
		t.Errorf("%d lines read, %d written, or they differ", len(got), len(want))
	}
	if padding := float64(len(data)-len(strings.Join(want, ""))) / float64(len(data)); padding > 0.5 {
		t.Errorf("padding is %.0f%% of the file", 100*padding)
	}
}

// childWriterEnv makes the test binary a flow log writer that writes until it is killed
// (TestNoTornLinesAfterSIGKILL).
const childWriterEnv = "PODWALL_FLOWS_TEST_WRITER"

func TestMain(m *testing.M) {
	if path := os.Getenv(childWriterEnv); path != "" {
		writeForever(path)
	}
	os.Exit(m.Run())
}

// writeForever writes numbered lines to the flow log at path through File until killed.
func writeForever(path string) {
	f, err := OpenFile(path, 256<<10, 2)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	batches := make([][]byte, 100) // made beforehand: the writer spends its time writing
	for n := range 1000 {
		batches[n/10] = append(batches[n/10], makeLine(0, n)...)
	}
	for n := 0; ; n++ {
		r := f.Rotations()
		if _, err := f.Write(batches[n%len(batches)]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if f.Rotations() != r {
			fmt.Println("rotated") // the parent waits for three
		}
	}
}

// A writer killed with SIGKILL in the middle of writing, again and again, leaves only whole
// lines: every line of every file parses.
func TestNoTornLinesAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts writer processes")
	}
	path := filepath.Join(t.TempDir(), "flows.log")
	for round := range 30 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childWriterEnv+"="+path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it in the middle of writing, once it has rotated the log three times.
		rd := bufio.NewReader(out)
		for range 3 {
			if _, err := rd.ReadString('\n'); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: the writer stopped: %v: %s", round, err, stderr.String())
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("round %d: the writer ended with %v, not by SIGKILL: %s", round, err, stderr.String())
		}
		lines, _ := readLog(t, path, 2)
		if len(lines) == 0 {
			t.Fatalf("round %d: no lines", round)
		}
	}
}
