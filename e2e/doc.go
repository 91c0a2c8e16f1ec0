// Package e2e holds podwall's end-to-end tests: the real binary enforcing NetworkPolicy on
// real packets in a network-namespace lab (package lab), as root. Every test builds its own
// lab with a per-run name prefix and removes it, also on failure; TestMain sweeps the labs
// that earlier, killed runs left behind. Without root the tests skip.
package e2e
