package kube

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/podwall/podwall/e2e/cluster"
	"github.com/podwall/podwall/e2e/labenv"
)

// binary is the podwall binary under test, built once by TestMain.
var binary string

// repo is the repository's root.
const repo = "../.."

func TestMain(m *testing.M) {
	os.Exit(labenv.Main(m, "e2e/kube", &binary, func() {
		if err := cluster.StopShared(); err != nil {
			fmt.Println("e2e/kube: stopping the API server:", err)
		}
	}))
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
}

// podwall runs the binary and returns its stdout; a failure fails the test with stderr.
func podwall(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("podwall %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// randomID returns 6 random hex digits.
func randomID() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
