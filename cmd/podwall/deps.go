package main

// Temporary: pins the chosen dependencies in go.mod until real code imports them.
import (
	_ "github.com/florianl/go-nfqueue/v2"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/google/gopacket/layers"
	_ "github.com/google/nftables"
	_ "github.com/hashicorp/golang-lru/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "k8s.io/api/networking/v1"
	_ "k8s.io/apimachinery/pkg/util/validation"
	_ "k8s.io/client-go/kubernetes"
	_ "sigs.k8s.io/yaml"
)

func main() {}
