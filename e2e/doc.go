// Package e2e holds podwall's end-to-end tests: the real binary enforcing NetworkPolicy on
// real packets in a network-namespace lab (cmd/podwall/lab), as root. Every test builds its
// own lab with a per-run name prefix through e2e/labenv and removes it, also on failure;
// TestMain sweeps the labs that earlier, killed runs left behind. Without root the tests
// skip.
package e2e
