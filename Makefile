# predq: queue-driven asynchronous prediction pipeline.
# `make run` brings the whole pipeline up; `make test` runs every test against real services.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
PKGS     := ./...
# The modules of the repository: the service (.), the bench and e2e tests (tools), the
# deploy-file checks (deploy). `make test` vets and tests each.
MODULES  := . tools deploy

.PHONY: all build run test test-short lint vet fmt train bench bench-smoke deps proto clean

all: build

## build: compile every command into bin/
build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

## run: start Postgres/Redis if needed, migrate, start api + worker + scheduler (Ctrl-C stops all)
run: build
	./bin/dev

## test: every test of every module with the race detector against real Postgres and Redis
test: deps
	@for m in $(MODULES); do echo "go vet ($$m)"; (cd $$m && $(GO) vet $(PKGS)) || exit 1; done
	@status=0; for m in $(MODULES); do echo "go test ($$m)"; \
		(cd $$m && $(GO) test -race -count=1 -timeout 20m $(PKGS)) || status=1; done; exit $$status

## test-short: the same without the race detector (quicker while developing)
test-short: deps
	@status=0; for m in $(MODULES); do (cd $$m && $(GO) test -count=1 $(PKGS)) || status=1; done; exit $$status

## bench: the figures of the performance issues, as ratios to ceilings measured in the same run
## (a few minutes; markdown table on stdout, progress on stderr; BENCH_FLAGS=-json for JSON),
## then the in-process `go test -bench` measurements that the table names
bench: deps
	@cd tools && $(GO) run ./bench $(BENCH_FLAGS)
	@cd tools && $(GO) run ./bench gobench

## bench-smoke: the same in well under a minute, too small for the targets: checks the tools work (CI)
bench-smoke: deps
	@cd tools && $(GO) run ./bench -smoke $(BENCH_FLAGS)
	@cd tools && $(GO) run ./bench gobench -benchtime 1x

## deps: make sure the server binaries the tests start are installed
deps:
	@scripts/ensure-deps.sh

## lint: gofmt, go vet and golangci-lint (pinned; installed from the Go module proxy on first use)
## over every module; .golangci.yml's depguard rules keep the layers of STYLE.md
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/predq-tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
lint: $(GOLANGCI_LINT)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && $(GO) vet $(PKGS)) || exit 1; done
	@for m in $(MODULES); do echo "golangci-lint ($$m)"; (cd $$m && $(GOLANGCI_LINT) run $(PKGS)) || exit 1; done

$(GOLANGCI_LINT):
	GOBIN=$(dir $(GOLANGCI_LINT)) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

fmt:
	gofmt -w $$(git ls-files '*.go')

## proto: regenerate the Go code of the vendored Open Inference Protocol gRPC service
## (internal/oip/inferencepb) with Debian's protobuf-compiler, protoc-gen-go and
## protoc-gen-go-grpc (apt-get install protobuf-compiler protoc-gen-go protoc-gen-go-grpc)
PROTO_DIR := internal/oip/inferencepb
PROTO_PKG := Mopen_inference_grpc.proto=github.com/predq/predq/$(PROTO_DIR);inferencepb
proto:
	cd $(PROTO_DIR) && protoc -I. \
		--go_out=. --go_opt=paths=source_relative --go_opt='$(PROTO_PKG)' \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative --go-grpc_opt='$(PROTO_PKG)' \
		open_inference_grpc.proto

## train: retrain the shipped models from data/sonar.csv (deterministic)
train:
	$(GO) run ./cmd/train -data data/sonar.csv -out models

clean:
	rm -rf bin
