package kube

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config returns the client configuration for the kubeconfig file at path (its current
// context), or, when path is empty, the in-cluster configuration: the pod's ServiceAccount
// token and the API server from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
// userAgent names the client in the API server's logs and audit.
func Config(path, userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
	} else {
		if !InCluster() {
			return nil, errors.New("not in a cluster (KUBERNETES_SERVICE_HOST is not set): give a kubeconfig")
		}
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	cfg.UserAgent = userAgent
	return cfg, nil
}

// InCluster reports whether the process runs in a pod that can use the in-cluster
// configuration (KUBERNETES_SERVICE_HOST is set).
func InCluster() bool { return os.Getenv("KUBERNETES_SERVICE_HOST") != "" }
