// Command podwall enforces Kubernetes NetworkPolicy on a node and explains its verdicts.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
)

func main() { os.Exit(run()) }

// errBadInput marks a failure already reported to the user: exit non-zero, print nothing more.
var errBadInput = errors.New("bad input")

// exitStatus is a documented exit status other than 1, for an outcome that is not a failure
// and has been reported already (what-if: 3, a flow would be newly denied).
type exitStatus int

func (s exitStatus) Error() string { return "exit status " + strconv.Itoa(int(s)) }

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	if err := root.ExecuteContext(ctx); err != nil {
		var st exitStatus
		if errors.As(err, &st) {
			return int(st)
		}
		if !errors.Is(err, errBadInput) {
			fmt.Fprintln(os.Stderr, "podwall:", err)
		}
		return 1
	}
	return 0
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "podwall",
		Short:         "Kubernetes NetworkPolicy, enforced simply, correctly and transparently",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCmd(), newExplainCmd(), newRunCmd(), newDemoCmd(), newTailCmd(), newCleanupCmd(), newWhatifCmd())
	return root
}
