# podwall — common tasks. Most targets need root (network namespaces, nftables).
GO      ?= go
BIN     ?= bin/podwall
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK_VERSION := v0.6.1

.PHONY: build deps testenv test unit e2e bench demo lint fuzz clean

# Debian/Ubuntu packages the agent and the tests use; installed when missing (root).
DEB_PKGS := nftables iproute2 conntrack

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/podwall

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@for m in nf_tables nft_compat xt_NFQUEUE nfnetlink_queue nf_conntrack nf_conntrack_netlink nft_fib_inet veth; do modprobe $$m 2>/dev/null || true; done

# kube-apiserver and etcd for the cluster-mode tests, built from Go modules and cached under
# ~/.cache/podwall-testenv (≈ 10 min on a fresh machine, then instant). Built before the tests
# so the build does not compete with timing-sensitive tests for the CPU.
testenv:
	e2e/cluster/build.sh >/dev/null

# The whole suite: unit tests, kernel tests and the netns e2e (as root).
test: deps build testenv
	$(GO) test -count=1 -timeout 30m ./...

# Unit tests only: no root, no kernel.
unit:
	$(GO) test -short -count=1 ./...

e2e: deps build testenv
	$(GO) test -count=1 -timeout 30m -v ./e2e/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./bench/ ./datapath/... ./cmd/podwall/agent/ ./policy/decisions/

# The netns load harness and the agent's memory at scale (root; a few minutes). Flags:
# BENCH_LOAD_FLAGS, e.g. "--reps 3 --n 10000" or "--filters kernel,podwall,rawq" (see
# bench/README.md). Prints the tables bench/README.md records.
.PHONY: bench-load
BENCH_LOAD_FLAGS ?=
bench-load: deps build
	$(GO) build -o bin/podwall-bench ./bench/cmd/podwall-bench
	./bin/podwall-bench load --podwall $(BIN) $(BENCH_LOAD_FLAGS)
	./bin/podwall-bench rss --podwall $(BIN)

demo: deps build
	./$(BIN) demo

# Every fuzz target, one after the other, FUZZTIME each with one worker (not part of `test`
# or CI: the seeds under each package's testdata/fuzz run with the ordinary tests). Issue 11
# asks for 10 minutes each with no crash: `make fuzz FUZZTIME=10m`; one target:
# `make fuzz FUZZ_TARGETS=./conntrack/:FuzzParseEntry`.
FUZZTIME ?= 60s
FUZZ_TARGETS ?= ./datapath/packet/:FuzzDecode ./datapath/:FuzzParseMessages ./conntrack/:FuzzParseEntry \
	./policy/manifests/:FuzzLoad ./policy/manifests/:FuzzLoadListSplit ./policy/decisions/:FuzzParseFilter
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -parallel 1 $$pkg || exit 1; \
	done

# The release this checkout deploys: deploy/daemonset.yaml runs ghcr.io/podwall/podwall:$(RELEASE).
# `make release-tag RELEASE=v0.2.0` moves the manifests to another release (never :latest).
RELEASE ?= v0.1.0
.PHONY: release-tag pin-images
release-tag:
	@echo "$(RELEASE)" | grep -Eq '^v[0-9]+\.[0-9]+\.[0-9]+$$' || { echo "RELEASE=$(RELEASE): want vMAJOR.MINOR.PATCH"; exit 1; }
	sed -i -E 's|(image: ghcr.io/podwall/podwall):[^ ]+|\1:$(RELEASE)|' deploy/daemonset.yaml
	grep -n 'image:' deploy/daemonset.yaml

# Resolve the Dockerfile's base image tags to their digests again and pin them (needs docker
# with buildx and access to the registries).
GO_IMAGE   := golang:$(shell sed -n 's/^go //p' go.mod)-bookworm
BASE_IMAGE := gcr.io/distroless/static-debian12:latest
pin-images:
	@set -e; for img in $(GO_IMAGE) $(BASE_IMAGE); do \
		d=$$(docker buildx imagetools inspect "$$img" --format '{{.Manifest.Digest}}'); \
		echo "$$img@$$d"; repo=$${img%:*}; \
		sed -i -E "s|^FROM $$repo:[^ @]+(@sha256:[0-9a-f]+)?|FROM $$img@$$d|" Dockerfile; \
	done; grep -n '^FROM' Dockerfile

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean:
	rm -rf bin
