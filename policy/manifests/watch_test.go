package manifests

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/podwall/podwall/policy"
)

type result struct {
	state policy.State
	err   error
}

// watch runs Watch on path until the test ends and returns its onChange calls.
func watch(t *testing.T, path string) <-chan result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan result, 100)
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, path, func(st policy.State, err error) { changes <- result{st, err} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v after cancel, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Watch did not return after cancel")
		}
	})
	return changes
}

// next returns the next onChange call.
func next(t *testing.T, changes <-chan result) result {
	t.Helper()
	select {
	case r := <-changes:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no onChange call within 5s")
		return result{}
	}
}

// waitFor returns the first onChange call for which ok holds, skipping others (a reload may
// catch a file half-written in place).
func waitFor(t *testing.T, changes <-chan result, what string, ok func(result) bool) result {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case r := <-changes:
			if ok(r) {
				return r
			}
		case <-timeout:
			t.Fatalf("no onChange call with %s within 5s", what)
		}
	}
}

// replace writes path the way editors do: a new file renamed over the old one.
func replace(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func namespaces(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: " + n + "}\n")
	}
	return b.String()
}

func hasNamespaces(names ...string) func(result) bool {
	return func(r result) bool {
		var got []string
		for _, n := range r.state.Namespaces {
			got = append(got, n.Name)
		}
		return r.err == nil && reflect.DeepEqual(got, names)
	}
}

func TestWatchFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ns.yaml")
	writeFiles(t, dir, map[string]string{"ns.yaml": namespaces("a")})

	reloads := make(chan struct{}, 100)
	testHookReload = func() { reloads <- struct{}{} }
	t.Cleanup(func() { testHookReload = nil }) // runs after watch's cleanup has stopped Watch
	changes := watch(t, path)
	// The first Load is delivered at once.
	if r := next(t, changes); !hasNamespaces("a")(r) {
		t.Fatalf("first onChange = %+v, %v; want namespace a", r.state, r.err)
	}

	// An editor's rename-replace.
	replace(t, path, namespaces("a", "b"))
	waitFor(t, changes, "namespaces a, b", hasNamespaces("a", "b"))

	// A broken edit in place delivers the error, naming the file.
	if err := os.WriteFile(path, []byte(namespaces("a")+"metadata: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := waitFor(t, changes, "an error", func(r result) bool { return r.err != nil })
	if !strings.Contains(r.err.Error(), path+":") || !strings.Contains(r.err.Error(), "invalid YAML") {
		t.Errorf("error %q does not name %s and the problem", r.err, path)
	}

	// Fixing it delivers the new state.
	if err := os.WriteFile(path, []byte(namespaces("c")), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, changes, "namespace c", hasNamespaces("c"))

	// A save that changes nothing, and a change to another file of the directory, reload but
	// deliver nothing: the next call is the next real change. (Renames keep each read whole.)
	for len(reloads) > 0 {
		<-reloads
	}
	replace(t, path, namespaces("c"))
	writeFiles(t, dir, map[string]string{"other.yaml": namespaces("x")})
	select {
	case <-reloads:
	case <-time.After(5 * time.Second):
		t.Fatal("no reload within 5s of an unchanged save")
	}
	replace(t, path, namespaces("d"))
	if r := next(t, changes); !hasNamespaces("d")(r) {
		t.Fatalf("onChange after an unchanged save = %+v, %v; want namespace d", r.state, r.err)
	}

	// Removing the file is an error; creating it again recovers.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	r = waitFor(t, changes, "an error", func(r result) bool { return r.err != nil })
	if !strings.Contains(r.err.Error(), path) {
		t.Errorf("error %q does not name %s", r.err, path)
	}
	replace(t, path, namespaces("e"))
	waitFor(t, changes, "namespace e", hasNamespaces("e"))
}

func TestWatchDirectory(t *testing.T) {
	dir := t.TempDir()
	changes := watch(t, dir)
	if r := next(t, changes); r.err != nil || !reflect.DeepEqual(r.state, policy.State{}) {
		t.Fatalf("first onChange = %+v, %v; want an empty state", r.state, r.err)
	}

	pods := func(n int) func(result) bool {
		return func(r result) bool { return r.err == nil && len(r.state.Pods) == n }
	}
	pod := func(name string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name + "}\nspec: {containers: [{name: c}]}\n"
	}

	// A new subdirectory is read, and watched from then on.
	writeFiles(t, dir, map[string]string{"team/a.yaml": pod("a")})
	waitFor(t, changes, "1 pod", pods(1))
	replace(t, filepath.Join(dir, "team", "b.yaml"), pod("b"))
	waitFor(t, changes, "2 pods", pods(2))

	// An invalid object anywhere is rejected alone, named with its file; the rest applies.
	bad := filepath.Join(dir, "bad.json")
	replace(t, bad, `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"}, "spec": {"nodeNmae": "n"}}`)
	r := waitFor(t, changes, "a problem", func(r result) bool { return r.err == nil && len(r.state.Problems) == 1 })
	for _, want := range []string{bad + ":1: Pod default/c", `unknown field "spec.nodeNmae"`} {
		if !strings.Contains(r.state.Problems[0].String(), want) {
			t.Errorf("problem %q does not contain %q", r.state.Problems[0], want)
		}
	}
	if len(r.state.Pods) != 3 {
		t.Errorf("pods %+v: want the two good ones and the rejected one", r.state.Pods)
	}

	// A broken file anywhere is an error naming it; removing it recovers.
	replace(t, bad, `{"apiVersion": "v1", "kind": "Pod",, }`)
	r = waitFor(t, changes, "an error", func(r result) bool { return r.err != nil })
	if want := bad + ":1: document 1: invalid JSON"; !strings.Contains(r.err.Error(), want) {
		t.Errorf("error %q does not contain %q", r.err, want)
	}
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	waitFor(t, changes, "2 pods", pods(2))
}

func TestWatchCannotWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "ns.yaml")
	called := false
	err := Watch(context.Background(), path, func(policy.State, error) { called = true })
	if err == nil || !strings.Contains(err.Error(), filepath.Dir(path)) {
		t.Errorf("Watch(%s) = %v, want an error naming its directory", path, err)
	}
	if called {
		t.Error("onChange was called although Watch could not watch")
	}
}
