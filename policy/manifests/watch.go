package manifests

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/podwall/podwall/policy"
)

// Debouncing. An editor's save is a burst of events (write a temporary file, rename it over
// the old one, chmod) within a few milliseconds; a ConfigMap update is one symlink swap.
// Watch reloads once a burst has been quiet for quiet, and at the latest maxDelay after the
// burst's first event so that a directory that never settles is still reloaded. quiet is
// small because the project's budget from edit to enforcement is 50 ms at p99.
const (
	quiet    = 20 * time.Millisecond
	maxDelay = 100 * time.Millisecond
)

// testHookReload, when set before Watch starts, is called after each reload, delivered or not.
var testHookReload func()

// Watch calls onChange with the result of Load(path) now, and again after every change to
// the manifests, until ctx is done; then it returns nil. It returns an error only when it
// cannot watch: path's directory, or path itself when it is a directory, does not exist.
//
// For a file, Watch watches the directory holding it, so editors that replace the file by
// renaming and Kubernetes ConfigMap volumes (a symlink swap) are seen. For a directory it
// watches every directory Load reads, adding new ones as they appear. onChange runs on
// Watch's goroutine, one call at a time; it is not called when a change leaves every
// manifest byte for byte as last delivered (a touch, a save without edits). An error means
// "keep the last good state": a broken edit is followed by a new call once it is fixed.
func Watch(ctx context.Context, path string, onChange func(policy.State, error)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	defer w.Close()

	watched := map[string]bool{}
	watch := func(dirs []string) (added bool, err error) {
		for _, d := range dirs {
			if watched[d] {
				continue
			}
			if err := w.Add(d); errors.Is(err, fs.ErrNotExist) {
				continue // removed since it was read; its removal is an event of its parent
			} else if err != nil {
				return added, fmt.Errorf("watch %s: %w", d, err)
			}
			watched[d], added = true, true
		}
		return added, nil
	}
	root := filepath.Dir(path)
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		root = path
	}
	if err := w.Add(root); err != nil {
		return fmt.Errorf("watch %s: %w", root, err)
	}
	watched[root] = true

	// The sum of the manifests last delivered; nil forces the next delivery. A copy: a
	// pointer into the source would keep every byte read alive until the next reload.
	var last *[sha256.Size]byte
	reload := func() {
		if testHookReload != nil {
			defer testHookReload()
		}
		src := read(path)
		// Directories that appeared are watched before their files are read, so that no
		// write is missed between the two.
		if added, err := watch(src.dirs); err != nil {
			onChange(policy.State{}, err)
			last = nil
			return
		} else if added {
			src = read(path)
		}
		if last != nil && src.sum == *last {
			return
		}
		sum := src.sum
		last = &sum
		onChange(src.parse())
	}
	reload()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var burst time.Time // first event of the pending burst; zero when none is pending
	schedule := func() {
		now := time.Now()
		if burst.IsZero() {
			burst = now
		}
		timer.Reset(min(quiet, burst.Add(maxDelay).Sub(now)))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", path)
			}
			if ev.Op != fsnotify.Chmod {
				schedule()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watch %s: watcher closed", path)
			}
			// Events may have been lost: reload, and deliver the result even if unchanged.
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				onChange(policy.State{}, fmt.Errorf("watch %s: %w", path, err))
			}
			last = nil
			schedule()
		case <-timer.C:
			burst = time.Time{}
			reload()
		}
	}
}
