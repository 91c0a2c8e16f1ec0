package main

import (
	"context"
	"errors"

	"github.com/spf13/pflag"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/manifests"
)

// This file owns where the agent's objects come from.

func (o *runOpts) addSourceFlags(f *pflag.FlagSet) {
	f.StringVar(&o.manifests, "manifests", "", "file or directory of Kubernetes YAML/JSON, reloaded on change")
}

func (o *runOpts) validateSource() error {
	if o.manifests == "" {
		return errors.New("--manifests is required")
	}
	return nil
}

func (o *runOpts) newSource() (policy.Source, error) {
	return policy.SourceFunc(func(ctx context.Context, update func(policy.State, error)) error {
		return manifests.Watch(ctx, o.manifests, update)
	}), nil
}
