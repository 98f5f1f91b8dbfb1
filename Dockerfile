# One image with the four binaries; it has no default command: the
# manifests name the binary (`command: [/usr/local/bin/aggregator, ...]`), and
# `docker run IMAGE ingest serve`, `docker run IMAGE rtcctl sessions` run the
# binary named first. An unknown name fails with "executable file not found";
# no name fails with "no command specified": never a silent aggregator.
#
# Not built in CI (no container engine there); the Go build it runs is the one
# CI checks. .git is not in the build context (.dockerignore), so pass the
# version and commit:
#
#   docker build \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg COMMIT="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     -t rtc-sessions:"$(git describe --tags --always --dirty)" .
FROM golang:1.26 AS build
ARG VERSION=devel
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags="-s -w -X github.com/rtcsessions/rtc-sessions/internal/version.version=${VERSION} -X github.com/rtcsessions/rtc-sessions/internal/version.commit=${COMMIT}" \
      -o /out/ ./cmd/aggregator ./cmd/ingest ./cmd/rtcctl ./cmd/rtcapi \
 && /out/rtcctl --version

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=devel
ARG COMMIT=unknown
ARG CREATED=""
ARG SOURCE=https://github.com/rtcsessions/rtc-sessions
LABEL org.opencontainers.image.title="rtc-sessions" \
      org.opencontainers.image.description="Authoritative MatrixRTC call sessions on NATS JetStream: aggregator, ingest, rtcctl, rtcapi" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.documentation="${SOURCE}/blob/${COMMIT}/README.md" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# Deliberately no ENTRYPOINT and no CMD (see above). distroless puts
# /usr/local/bin on PATH, so the first argument names the binary.
