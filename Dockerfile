# One image for every tagger binary: /usr/local/bin/controller,
# /usr/local/bin/node-agent and /usr/local/bin/kubectl-tag (each command under
# cmd/ lands there). The Helm chart picks the binary with `command:`.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/tagger-project/tagger:0.1.0 .

# BuildKit is required (RUN --mount, $BUILDPLATFORM): the default builder of
# Docker 23+ and of buildx. There is deliberately no `# syntax=` line: it
# makes BuildKit pull a frontend image from Docker Hub before it reads a
# line, and BuildKit's built-in Dockerfile frontend already has everything
# this file uses, so the image also builds where Docker Hub is unreachable
# (the tests build it that way: docs/local-cluster.md, "The tagger image").

# go.mod asks for go 1.26.8; the golang:1.26 tag follows the newest 1.26
# patch release, and the image sets GOTOOLCHAIN=local, so an older base fails
# loudly instead of downloading a toolchain.
ARG GO_VERSION=1.26

# The builder runs on the build machine's platform and cross-compiles
# (CGO_ENABLED=0), so multi-arch builds need no emulation.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
# Module download settings, passed through when given (--build-arg
# GOPROXY=...); unset, Go's defaults apply.
ARG GOPROXY
ARG GOSUMDB
WORKDIR /src

# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

# What --version prints and tagger_build_info reports (pkg/version):
#   --build-arg VERSION=$(git describe --tags --always --dirty) \
#   --build-arg COMMIT=$(git rev-parse HEAD) --build-arg DATE=$(git log -1 --format=%cI)
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X github.com/tagger-project/tagger/pkg/version.Version=${VERSION} -X github.com/tagger-project/tagger/pkg/version.Commit=${COMMIT} -X github.com/tagger-project/tagger/pkg/version.Date=${DATE}" \
      -o /out/ ./cmd/...

# distroless static: no shell, no package manager, CA certificates for the
# upstream registries, and the "nonroot" user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="tagger" \
      org.opencontainers.image.description="Pins container image tags to digests across a Kubernetes cluster" \
      org.opencontainers.image.source="https://github.com/tagger-project/tagger" \
      org.opencontainers.image.version="$VERSION"
COPY --from=build /out/ /usr/local/bin/
# Every component runs unprivileged except the node agent, whose DaemonSet
# sets runAsUser 0 because it rewrites root-owned files under the host's
# /etc/containerd/certs.d (deploy/chart/tagger/values.yaml, nodeAgent.securityContext).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/controller"]
