//go:build tools

// Package testenv pins the servers the cluster e2e tests build: the import
// list keeps go.sum complete for
//
//	go build k8s.io/kubernetes/cmd/kube-apiserver go.etcd.io/etcd/server/v3
package testenv

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
