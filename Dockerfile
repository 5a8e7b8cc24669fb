# syntax=docker/dockerfile:1
#
# predq: one image with every binary (api, worker, scheduler, train).
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t predq:dev .
#
# The builder's Go version is go.mod's `go` line (deploy/deploy_test.go checks that they agree).
# The binaries are static (CGO_ENABLED=0), so the runtime image is distroless/static: no shell,
# no package manager, user nonroot (65532). Choose the process with the command:
#   /app/api [serve] | /app/api migrate | /app/worker | /app/scheduler | /app/train

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# Modules in their own layer: rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ \
        ./cmd/api ./cmd/worker ./cmd/scheduler ./cmd/train ./cmd/predq

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="predq" \
      org.opencontainers.image.description="Queue-driven ML prediction service" \
      org.opencontainers.image.source="https://github.com/predq/predq" \
      org.opencontainers.image.version="${VERSION}"
WORKDIR /app
COPY --from=build /out/ /app/
# Model artifacts (MODEL_PATH), the SQL migrations (also embedded in the api binary) and the
# training data (for /app/train). Owned by root and read-only for the nonroot user.
COPY models/ /app/models/
COPY migrations/ /app/migrations/
COPY data/ /app/data/
ENV MODEL_PATH=/app/models \
    PATH=/app:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 65532:65532
EXPOSE 8080 8081 9091 9092
# The api's check; worker and scheduler override it with their own port (docker-compose.yml:
# `api healthcheck --url http://127.0.0.1:9091/health/live`), migrate disables it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/app/api", "healthcheck"]
CMD ["/app/api", "serve"]
