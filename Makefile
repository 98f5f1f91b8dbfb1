# rtc-sessions developer targets. `make test` is what CI runs (.ci/run).
GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.0
GOBIN         ?= $(shell $(GO) env GOPATH)/bin
PKGS          := ./...
FUZZTIME      ?= 20s

.PHONY: all build test unit lint vet staticcheck fmt-check bench fuzz demo tools clean chaos cluster k8s-validate e2e

all: build

## build: the binaries in bin/, stamped with the version and commit (`<binary> --version`, rtc_build_info)
VERSION_PKG   := github.com/rtcsessions/rtc-sessions/internal/version
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT        ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS       := -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

## test: everything CI checks: formatting, vet, staticcheck, the race-enabled test suite, the
##       Kubernetes manifests (k8s-validate) and the end-to-end tests against Dendrite (e2e)
test: fmt-check vet staticcheck unit k8s-validate e2e

unit:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## e2e: against real Dendrite homeservers (tools/dendrite builds and caches Dendrite, ~2 min the first time);
##      test/jsclient drives them with matrix-js-sdk's own MatrixRTCSession (node; npm ci into a cache)
e2e:
	RTC_E2E=1 $(GO) test -count=1 -timeout 15m ./test/e2e/...
	RTC_E2E=1 $(GO) test -count=1 -timeout 6m -v -run TestElementCallClient ./test/jsclient/...

## k8s-validate: render every overlay of deploy/k8s with every combination of its components
##       (kustomize's Go API) and decode every object strictly into the real Kubernetes, KEDA and
##       prometheus-operator types; parse the alert rules with Prometheus's rule parser. A module of
##       its own (deploy/k8s/validate) so that these dependencies stay out of the service's
##       go.mod; the go command downloads them on first use.
k8s-validate:
	cd deploy/k8s/validate && $(GO) vet ./... && $(GO) test -count=1 -timeout 15m ./...

lint: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck: tools
	$(GOBIN)/staticcheck $(PKGS)

tools:
	@test -x $(GOBIN)/staticcheck || $(GO) install $(STATICCHECK)

## bench: the Go benchmarks (with allocation figures), then the operator benchmark (cmd/rtcbench):
##        standalone nats-server + aggregator processes, one table of the issue-10 figures, each next to
##        a baseline measured in the same run (~6 min). Subset/size: make bench RTCBENCH_FLAGS="-quick -only takeover"
bench:
	status=0; $(GO) test -run '^$$' -bench . -benchmem -count 1 ./pkg/... ./internal/... || status=$$?; \
	$(GO) run ./cmd/rtcbench $(RTCBENCH_FLAGS) || exit $$?; exit $$status

## fuzz: run every fuzz target for FUZZTIME each (corpus under testdata/fuzz)
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## chaos: only the chaos test (test/chaos, part of `make test` too): real aggregator, ingest and
##        nats-server processes SIGKILLed and restarted under a seeded random workload, then
##        RTC_EVENTS compared with `rtcctl simulate`. RTC_CHAOS_SEED=N replays a seed's workload.
chaos:
	$(GO) test -race -count=1 -timeout 6m -run 'TestChaos|TestWorkload' -v ./test/chaos/

## cluster: only the cluster test (test/cluster, part of `make test` too): three nats-server
##        processes in a cluster, aggregators and the ingest started together on it (replicas 3),
##        a seeded random workload while stream leaders, an aggregator and a node for 20 s are
##        SIGKILLed; then RTC_EVENTS compared with `rtcctl simulate` and checked for per-room seq
##        order. RTC_CLUSTER_SEED=N replays a seed's workload.
cluster:
	$(GO) test -race -count=1 -timeout 8m -run 'TestCluster' -v ./test/cluster/

## demo: build, start aggregator + ingest on a temp embedded NATS, play a sample call through real
##       appservice transactions and show the session events (scripts/demo.sh)
demo:
	./scripts/demo.sh

clean:
	rm -rf bin/
