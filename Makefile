# tierlock: `make demo` shows it working, `make test` runs every test against a real Consul.
GO      ?= go
VERSION ?= 0.1.0
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
CONSUL  := bin/consul

export TIERLOCK_CONSUL := $(abspath $(CONSUL))

LAMBDA_ARCHES := amd64 arm64

.PHONY: all build lambda consul test test-deps lint demo clean

all: build

## build: bin/tierlock, with version, git SHA and build date
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/tierlock ./cmd/tierlock

## lambda: dist/tierlock-reaper-{amd64,arm64}.zip, each holding the Lambda's `bootstrap`
## (provided.al2023; static, no RPC mode; zipped by internal/lambdazip, no zip tool needed)
lambda:
	@set -e; for arch in $(LAMBDA_ARCHES); do \
		mkdir -p dist/$$arch; \
		echo "dist/tierlock-reaper-$$arch.zip"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -tags lambda.norpc -trimpath \
			-ldflags "-s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)" \
			-o dist/$$arch/bootstrap ./cmd/tierlock-reaper; \
		$(GO) run ./internal/lambdazip -o dist/tierlock-reaper-$$arch.zip dist/$$arch/bootstrap; \
	done

## consul: the Consul agent the tests and the demo run (built once from the module proxy)
consul:
	./scripts/build-consul.sh $(CONSUL)

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## test-deps: the Debian packages the tests use (nagios4-core, libmonitoring-plugin-perl)
test-deps:
	./scripts/test-deps.sh

## test: lint, the Lambda zips, then every test against a real Consul agent (race detector on)
test: lint consul test-deps lambda
	$(GO) test -race -count=1 -timeout 20m ./...

## demo: a local Consul agent and 8 simulated hosts going through a tier of 2 slots
demo: build consul
	$(GO) run ./internal/demo -tierlock bin/tierlock -consul $(CONSUL)

clean:
	rm -rf bin/tierlock dist
