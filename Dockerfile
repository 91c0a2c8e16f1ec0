# podwall's agent image: `docker build -t ghcr.io/podwall/podwall:dev --build-arg VERSION=dev .`
#
# Build stage: a static binary (no cgo), reproducible paths (-trimpath).
FROM golang:1.26-bookworm AS build
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
FROM gcr.io/distroless/static-debian12:latest
ARG VERSION=dev
LABEL org.opencontainers.image.title="podwall" \
      org.opencontainers.image.description="Kubernetes NetworkPolicy enforcement on a node: nftables, NFQUEUE and a Go verdict engine" \
      org.opencontainers.image.source="https://github.com/podwall/podwall" \
      org.opencontainers.image.url="https://github.com/podwall/podwall" \
      org.opencontainers.image.documentation="https://github.com/podwall/podwall#install-on-a-cluster" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/podwall /podwall
ENTRYPOINT ["/podwall", "run"]
