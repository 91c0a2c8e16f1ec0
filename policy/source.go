package policy

import "context"

// Source delivers the objects policy depends on. The agent takes any Source: the manifests
// directory (package manifests) or the Kubernetes API.
type Source interface {
	// Run calls update with a complete State whenever the objects change — first once the
	// source has everything (synced) — until ctx ends. An object the source cannot use is
	// rejected alone, in State.Problems (see Problem); an error passed to update means the
	// source could not produce a state at all (a file that does not parse): the caller
	// keeps enforcing the last good one.
	// Run returns nil when ctx ends, or an error when the source cannot work at all.
	Run(ctx context.Context, update func(State, error)) error
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, update func(State, error)) error

// Run calls f.
func (f SourceFunc) Run(ctx context.Context, update func(State, error)) error { return f(ctx, update) }
