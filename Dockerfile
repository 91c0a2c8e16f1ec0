# podwall's agent image: `docker build -t ghcr.io/podwall/podwall:dev --build-arg VERSION=dev .`
#
# Base images are pinned by digest (the tag stays for people; the digest is what is pulled),
# so a build is the same whatever the tags point to that day. The digests are multi-platform
# index digests, as published for these tags and recorded by several public projects on
# 2026-09-10 (distroless) and 2026-09-23 (golang 1.26.8); this repository's machines cannot
# reach a registry, so they were not resolved here: `make pin-images` resolves the tags again
# (docker buildx imagetools) and rewrites both lines. The Go patch release is go.mod's.
#
# Build stage: a static binary (no cgo), reproducible paths (-trimpath).
FROM golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/podwall ./cmd/podwall

# Run stage: distroless static (no shell, no package manager; CA certificates, tzdata,
# /etc/passwd). Not the :nonroot variant: the agent needs CAP_NET_ADMIN in its effective
# set, which a non-root user only gets through ambient capabilities, and Kubernetes grants
# none. The DaemonSet (deploy/) runs it as root with every capability dropped but
# NET_ADMIN, not privileged, on a read-only root filesystem.
FROM gcr.io/distroless/static-debian12:latest@sha256:d75cdd72874d4790092fcb1b058493ecf6bb5bf2b2b897045b00ff01d91843f2
ARG VERSION=dev
LABEL org.opencontainers.image.title="podwall" \
      org.opencontainers.image.description="Kubernetes NetworkPolicy enforcement on a node: nftables, NFQUEUE and a Go verdict engine" \
      org.opencontainers.image.source="https://github.com/podwall/podwall" \
      org.opencontainers.image.url="https://github.com/podwall/podwall" \
      org.opencontainers.image.documentation="https://github.com/podwall/podwall#install-on-a-cluster" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/podwall /podwall
ENTRYPOINT ["/podwall", "run"]
