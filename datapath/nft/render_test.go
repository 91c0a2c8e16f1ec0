package nft

import (
	"bytes"
	"encoding/binary"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenConfig is the configuration every golden file is rendered from.
func goldenConfig(failOpen bool) Config {
	return Config{
		QueueNum:             100,
		QueueCount:           4,
		FailOpen:             failOpen,
		PodInterfacePrefixes: []string{"veth", "pw"},
		DenyCacheTTL:         2 * time.Second,
		RevokedMark:          0x10000000,
	}
}

// compareGolden compares got with testdata/name, or rewrites the file with
// -update.
func compareGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// The renderings that Program can install: both queue renderings, both
// failure policies, and a single queue (no fanout) without anti-spoofing
// and without the deny cache (no sets denied4 and denied6, no rules), and
// one with the allow cache too (sets allowed4 and allowed6, a rule after each
// deny-cache rule).
func TestRenderGolden(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden files hold host-endian values of a little-endian host")
	}
	single := goldenConfig(false)
	single.QueueCount = 1
	single.PodInterfacePrefixes = nil
	single.DenyCacheTTL = 0
	allow := goldenConfig(false)
	allow.AllowCacheTTL = 3 * time.Second
	for _, tc := range []struct {
		golden string
		cfg    Config
		mode   QueueMode
	}{
		{"render-native-failclosed.golden", goldenConfig(false), ModeNative},
		{"render-native-failopen.golden", goldenConfig(true), ModeNative},
		{"render-compat-failclosed.golden", goldenConfig(false), ModeCompat},
		{"render-compat-failopen.golden", goldenConfig(true), ModeCompat},
		{"render-compat-single-queue.golden", single, ModeCompat},
		{"render-compat-allow-cache.golden", allow, ModeCompat},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			got, err := Render(tc.cfg, tc.mode)
			if err != nil {
				t.Fatal(err)
			}
			compareGolden(t, tc.golden, got)
		})
	}
}

// Render is deterministic: the golden files are only worth something if two
// calls agree.
func TestRenderDeterministic(t *testing.T) {
	for _, mode := range []QueueMode{ModeNative, ModeCompat} {
		a, _ := Render(goldenConfig(true), mode)
		b, _ := Render(goldenConfig(true), mode)
		if !bytes.Equal(a, b) {
			t.Errorf("%v: two renders differ", mode)
		}
	}
}

// Render needs a concrete mode and a valid config.
func TestRenderErrors(t *testing.T) {
	if _, err := Render(goldenConfig(false), ModeAuto); err == nil {
		t.Error("Render(ModeAuto): no error")
	}
	if _, err := Render(Config{}, ModeNative); err == nil {
		t.Error("Render(zero Config): no error")
	}
}

// The failure policy shows in the queue rules only, and only as bypass.
func TestRenderBypassOnlyWhenFailOpen(t *testing.T) {
	for _, mode := range []QueueMode{ModeNative, ModeCompat} {
		closed, _ := Render(goldenConfig(false), mode)
		open, _ := Render(goldenConfig(true), mode)
		if bytes.Contains(closed, []byte("bypass")) {
			t.Errorf("%v fail-closed rendering mentions bypass:\n%s", mode, closed)
		}
		if n := bytes.Count(open, []byte("bypass")); n != 16 {
			t.Errorf("%v fail-open rendering: bypass %d times, want once per queue rule (4 isolation, 4 new-pod window, 4 own-node, 4 own-node window)", mode, n)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none: valid
	}{
		{"golden config", goldenConfig(false), nil},
		{"queues up to 65535", Config{QueueNum: 65532, QueueCount: 4}, nil},
		{"deny cache at most a minute", Config{QueueCount: 1, DenyCacheTTL: time.Minute}, nil},
		{"deny cache past a minute", Config{QueueCount: 1, DenyCacheTTL: time.Minute + time.Millisecond}, []string{"deny cache TTL"}},
		{"negative deny cache", Config{QueueCount: 1, DenyCacheTTL: -time.Second}, []string{"deny cache TTL"}},
		{"deny cache below a millisecond", Config{QueueCount: 1, DenyCacheTTL: 1500 * time.Microsecond}, []string{"whole milliseconds"}},
		{"allow cache at most a minute", Config{QueueCount: 1, AllowCacheTTL: time.Minute}, nil},
		{"allow cache past a minute", Config{QueueCount: 1, AllowCacheTTL: time.Minute + time.Millisecond}, []string{"allow cache TTL"}},
		{"negative allow cache", Config{QueueCount: 1, AllowCacheTTL: -time.Second}, []string{"allow cache TTL"}},
		{"allow cache below a millisecond", Config{QueueCount: 1, AllowCacheTTL: 1500 * time.Microsecond}, []string{"whole milliseconds"}},
		{"no queues", Config{}, []string{"queue count"}},
		{"queues past 65535", Config{QueueNum: 65533, QueueCount: 4}, []string{"exceed 65535"}},
		{"all problems at once", Config{
			PodInterfacePrefixes: []string{"", "veth", "veth", "averyveryverylongname", "ve*th"},
			Mode:                 QueueMode(7),
		}, []string{"queue count", "empty pod interface prefix", "duplicate", "longer than 15", "'*'", "unknown queue mode"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error %q does not mention %q", err, w)
				}
			}
		})
	}
}
