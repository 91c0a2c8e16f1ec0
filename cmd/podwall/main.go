// Command podwall enforces Kubernetes NetworkPolicy on a node and explains its verdicts.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() { os.Exit(run()) }

// errBadInput marks a failure already reported to the user: exit non-zero, print nothing more.
var errBadInput = errors.New("bad input")

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	if err := root.ExecuteContext(ctx); err != nil {
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
	root.AddCommand(newVersionCmd(), newExplainCmd(), newRunCmd(), newDemoCmd(), newTailCmd(), newCleanupCmd())
	return root
}
