package main

import (
	"strings"
	"testing"
)

// One source: --manifests or --kubeconfig, or for the agent in a pod the in-cluster config.
func TestValidateSource(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		manifests, kubeconfig string
		agent, inPod          bool
		wantErr               string // substring; "" = valid
	}{
		{"agent, manifests", "dir", "", true, false, ""},
		{"agent, kubeconfig", "", "kc", true, false, ""},
		{"agent, both", "dir", "kc", true, false, "exclude each other"},
		{"agent, both in a pod", "dir", "kc", true, true, "exclude each other"},
		{"agent, neither", "", "", true, false, "no policy source"},
		{"agent, neither, in a pod", "", "", true, true, ""},
		{"explain, kubeconfig", "", "kc", false, false, ""},
		{"explain, neither", "", "", false, false, "give --manifests or --kubeconfig"},
		{"explain, neither, in a pod", "", "", false, true, "give --manifests or --kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.inPod {
				t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
			} else {
				t.Setenv("KUBERNETES_SERVICE_HOST", "")
			}
			err := validateSource(tc.manifests, tc.kubeconfig, tc.agent)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("err = %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

// A kubeconfig that does not exist is an error at start, naming the file.
func TestRunBadKubeconfig(t *testing.T) {
	root := newRoot()
	root.SetArgs([]string{"run", "--kubeconfig", "/nonexistent/kubeconfig"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Errorf("err = %v, want one naming the kubeconfig", err)
	}
}
