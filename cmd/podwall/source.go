package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/policy/kube"
	"github.com/podwall/podwall/policy/manifests"
)

// This file owns where the agent's objects come from: --manifests (files, watched), or the
// Kubernetes API with --kubeconfig or, inside a pod, the in-cluster configuration.

func (o *runOpts) addSourceFlags(f *pflag.FlagSet) {
	f.StringVar(&o.manifests, "manifests", "", "file or directory of Kubernetes YAML/JSON, reloaded on change")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file for the Kubernetes API (default: in-cluster config when KUBERNETES_SERVICE_HOST is set)")
}

func (o *runOpts) validateSource() error {
	return validateSource(o.manifests, o.kubeconfig, true)
}

// validateSource checks the choice of source: exactly one of manifests and kubeconfig, or
// neither when inCluster may be used.
func validateSource(manifests, kubeconfig string, inCluster bool) error {
	switch {
	case manifests != "" && kubeconfig != "":
		return errors.New("--manifests and --kubeconfig exclude each other")
	case manifests != "" || kubeconfig != "":
		return nil
	case inCluster && kube.InCluster():
		return nil
	case inCluster:
		return errors.New("no policy source: give --kubeconfig or --manifests (in a pod, the in-cluster config is used)")
	}
	return errors.New("give --manifests or --kubeconfig")
}

// newSource returns the policy source of the flags; node is this node's name (the
// Kubernetes source watches its Node for the pod ranges).
func (o *runOpts) newSource(node string, log *slog.Logger) (policy.Source, error) {
	if o.manifests != "" {
		return policy.SourceFunc(func(ctx context.Context, update func(policy.State, error)) error {
			return manifests.Watch(ctx, o.manifests, update)
		}), nil
	}
	cfg, err := kube.Config(o.kubeconfig, "podwall/"+version)
	if err != nil {
		return nil, err
	}
	// client-go logs through klog: send it to the agent's log, in the agent's format.
	klog.SetSlogLogger(log.With("component", "client-go"))
	return kube.New(cfg, kube.Options{Log: log, Node: node})
}

// load reads explain's objects once: the manifests, or the cluster's objects (kube.List).
// name says where they came from, for errors.
func (o *explainOpts) load(ctx context.Context) (st policy.State, name string, err error) {
	if o.manifests != "" {
		st, err = manifests.Load(o.manifests)
		return st, o.manifests, err
	}
	name = "cluster of " + o.kubeconfig
	cfg, err := kube.Config(o.kubeconfig, "podwall/"+version)
	if err != nil {
		return st, name, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err = kube.List(ctx, cfg)
	if err != nil {
		return st, name, fmt.Errorf("%s: %w", name, err)
	}
	return st, name, nil
}
