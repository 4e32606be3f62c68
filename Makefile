# tierlock: `make demo` shows it working, `make test` runs every test against a real Consul.
GO      ?= go
VERSION ?= 0.1.0
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
# Evaluated once, so every binary of one `make package` carries the same stamp.
COMMIT  := $(COMMIT)
DATE    := $(DATE)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
CONSUL  := bin/consul

# Packages: nfpm at a pinned version, built from the module proxy by `go run`.
NFPM       := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
ARCHES     := amd64 arm64
STAGE      := dist/stage
MAINTAINER ?= tierlock maintainers <maintainers@tierlock.invalid>

export TIERLOCK_CONSUL := $(abspath $(CONSUL))
# Only `make check` sets these (it skips the tests that need a Consul agent or built packages);
# from the caller's environment they never reach `make test`.
unexport TIERLOCK_SKIP_CONSUL TIERLOCK_SKIP_PACKAGES

LAMBDA_ARCHES := amd64 arm64


.PHONY: fleet fleet-sim all build lambda consul check test test-system test-deps lint demo demo-rollout bench bench-fleet man completions binaries packages package clean soak fuzz

all: build

## build: bin/tierlock, with version, git SHA and build date
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/tierlock ./cmd/tierlock

## lambda: dist/tierlock-reaper-{amd64,arm64}.zip, each holding the Lambda's `bootstrap`
## (provided.al2023; static, no RPC mode; zipped by internal/tools/lambdazip, no zip tool needed)
lambda:
	@set -e; for arch in $(LAMBDA_ARCHES); do \
		mkdir -p dist/$$arch; \
		echo "dist/tierlock-reaper-$$arch.zip"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -tags lambda.norpc -trimpath \
			-ldflags "-s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)" \
			-o dist/$$arch/bootstrap ./cmd/tierlock-reaper; \
		$(GO) run ./internal/tools/lambdazip -o dist/tierlock-reaper-$$arch.zip dist/$$arch/bootstrap; \
	done

## consul: the Consul agent the tests and the demo run (built once from the module proxy)
consul:
	./scripts/build-consul.sh $(CONSUL)

## lint: gofmt (tracked files and new ones not ignored) and go vet (the system test too, behind
## its build tag)
lint:
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags systemtest ./packaging/system

## check: before a commit, in about a minute with no Consul binary: lint, then every test that
## needs no Consul agent and no built packages (no -race); those that do skip, naming
## TIERLOCK_SKIP_CONSUL or TIERLOCK_SKIP_PACKAGES, and run in `make test`
check: lint
	TIERLOCK_SKIP_CONSUL=1 TIERLOCK_SKIP_PACKAGES=1 $(GO) test -count=1 -timeout 5m ./...

## test-deps: the Debian packages the tests use (nagios4-core, libmonitoring-plugin-perl,
## systemd, rpm, bash-completion, zsh, and for test-system systemd-container and debootstrap)
test-deps:
	./scripts/test-deps.sh

# The packages whose tests take longest start first (go test keeps this order, and runs each
# once), so that two at a time finish together rather than one long one last: cmd/tierlock
# (the longest) in one, the reaper then reliability in the other, then the rest. (lock after
# reliability, beside cmd/tierlock, gained nothing: 477 and 484 s against 439 s.)
# reliability is CPU-bound and its tests want Consul not starved (a 3-server cluster must
# elect a leader within a minute): it failed beside cmd/tierlock's first, busiest minutes, and
# starts after the reaper, beside cmd/tierlock's lighter end.
SLOW_FIRST := ./cmd/tierlock ./cmd/tierlock-reaper ./reliability ./packaging/prometheus

## test: lint, the packages and Lambda zips, then every test against a real Consul agent (with
## the race detector); the packaging tests install and purge the .deb on this machine when root;
## beside them test-system with that package, as root where systemd-nspawn can run (else a
## loud SKIP), and the fuzzing
test: lint consul test-deps package
	@# Beside go test: test-system (mostly a container booting and a timer waiting) and the
	@# fuzzing (one worker: a core for half a minute, where it had the machine to itself for
	@# 20 s at the end), their output kept in dist/test/ and printed at the end. go test's
	@# events are kept in dist/test/go-test.json (below dist/'s top, which SHA256SUMS covers
	@# and TestSHA256SUMS checks while they are written); testsum prints what go test would
	@# have (results, and the output of what failed), then the slowest tests.
	@mkdir -p dist/test; echo "test-system and the fuzzing beside go test (their output in dist/test/)"; \
	GO="$(GO)" ./scripts/test-system.sh --if-able > dist/test/test-system.log 2>&1 & sys=$$!; \
	FUZZTIME=10000x FUZZWORKERS=1 GO="$(GO)" ./scripts/fuzz.sh > dist/test/fuzz.log 2>&1 & fuzz=$$!; \
	echo "go test -race -count=1 -timeout 20m -json $(SLOW_FIRST) ./... > dist/test/go-test.json"; \
	rc=0; $(GO) test -race -count=1 -timeout 20m -json $(SLOW_FIRST) ./... > dist/test/go-test.json || rc=$$?; \
	$(GO) run ./internal/tools/testsum -slowest 20 < dist/test/go-test.json; \
	wait $$fuzz; fuzzrc=$$?; cat dist/test/fuzz.log; \
	wait $$sys; sysrc=$$?; cat dist/test/test-system.log; \
	[ $$rc -eq 0 ] || echo "make test: go test failed" >&2; \
	[ $$fuzzrc -eq 0 ] || echo "make test: the fuzzing failed" >&2; \
	[ $$sysrc -eq 0 ] || echo "make test: test-system failed" >&2; \
	[ $$rc -eq 0 ] && [ $$fuzzrc -eq 0 ] && [ $$sysrc -eq 0 ]

## test-system: the .deb `make package` built, under a real systemd in a systemd-nspawn
## container (root): install, timer, failures, stop, upgrades, removal, Consul unreachable.
## The Debian tree is made once by debootstrap and cached in ~/.cache/tierlock/
test-system: consul
	GO="$(GO)" ./scripts/test-system.sh

## soak: the long soak (SOAK_HOSTS hosts x SOAK_ROUNDS rounds with random command failures,
## faults, kills, set-max changes and Consul restarts, every invariant checked after every
## round); prints its figures, also left in dist/soak-figures.md
SOAK_HOSTS  ?= 16
SOAK_ROUNDS ?= 100
soak: consul
	mkdir -p dist
	$(GO) test -count=1 -timeout 6h -run '^TestSoak$$' ./reliability -args \
		-soak.hosts=$(SOAK_HOSTS) -soak.rounds=$(SOAK_ROUNDS) -soak.figures=$(abspath dist/soak-figures.md)
	@cat dist/soak-figures.md

## fuzz: every fuzz target for FUZZTIME each (default 1m); prints the executions
FUZZTIME ?= 1m
fuzz:
	FUZZTIME=$(FUZZTIME) GO="$(GO)" ./scripts/fuzz.sh

## fleet: both queue orders with real tierlock processes and a real Consul in compressed time
## (24 hosts, 2 slots, 12 cycles of 2.5 s, fixed offsets; about 70 s): runs per host, hosts
## that never ran, worst gap. Not part of `make test`: it takes longer than a minute.
fleet: consul build
	$(GO) run ./bench/turns

## fleet-sim: a day of a 200-host tier under the packaged timer, simulated, in both queue orders
fleet-sim:
	$(GO) run ./bench/fleetsim

## demo: a local Consul agent and 8 simulated hosts going through a tier of 2 slots
demo: build consul
	$(GO) run ./internal/tools/demo -tierlock bin/tierlock -consul $(CONSUL)

## demo-rollout: a progressive rollout through 10 simulated hosts (schedule 1,2,4,max, 4 slots):
## revision B canary -> 2 -> 4 -> the rest -> complete; C halted by its failing canary while
## the hosts on B keep converging; D, the fix, rolled out to complete (about 15 s)
demo-rollout: build consul
	$(GO) run ./internal/tools/demo -rollout -tierlock bin/tierlock -consul $(CONSUL)

## man: the man page, generated from the command definitions: dist/stage/tierlock.8.gz
man: build
	mkdir -p $(STAGE)
	bin/tierlock man | gzip -9n > $(STAGE)/tierlock.8.gz

## completions: the bash and zsh completion scripts, into dist/stage/
completions: build
	mkdir -p $(STAGE)
	bin/tierlock completion bash > $(STAGE)/tierlock.bash
	bin/tierlock completion zsh > $(STAGE)/_tierlock

## binaries: dist/tierlock_VERSION_linux_ARCH for every ARCH
binaries:
	mkdir -p dist
	rm -f $(foreach arch,$(ARCHES),dist/tierlock_*_linux_$(arch))
	for arch in $(ARCHES); do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" \
	    -o dist/tierlock_$(VERSION)_linux_$$arch ./cmd/tierlock || exit 1; \
	done

## packages: .deb and .rpm for every ARCH, into dist/
packages: binaries man completions
	rm -f dist/*.deb dist/*.rpm
	for arch in $(ARCHES); do for fmt in deb rpm; do \
	  VERSION=$(VERSION) ARCH=$$arch MAINTAINER="$(MAINTAINER)" \
	    $(NFPM) package --config packaging/nfpm.yaml --packager $$fmt --target dist/ || exit 1; \
	done; done

## package: binaries, packages, the Lambda zips and SHA256SUMS of everything at the top of dist/
package: lambda binaries packages
	cd dist && find . -maxdepth 1 -type f ! -name 'SHA256SUMS*' -printf '%P\n' | LC_ALL=C sort | \
	  xargs sha256sum > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS

## bench: tierlock against `consul lock -n` on the bench/README.md workloads, beside a zero-cost local
## semaphore in the same harness (the harness's own limit); a table, and JSON in bench/results/
bench: build consul
	$(GO) build -o bin/bench ./bench
	bin/bench -tierlock bin/tierlock -consul $(CONSUL) -out bench/results

## bench-fleet: thousands of simulated hosts (goroutines, each its own Consul client and
## connection) through one tier, tierlock's lock package against api.Semaphore (`consul lock
## -n`), one real agent behind a counting proxy; a table, and JSON in bench/results/.
## FLEET_ARGS passes flags, e.g. FLEET_ARGS='-m 100 -n 10 -long-waiters 200' for a small run;
## FLEET_ARGS='-revisions off,rerun,movers,settled,next' adds tierlock's runs with revisions (bench/README.md,
## "Progressive rollout: cost of a revision").
FLEET_ARGS ?=
bench-fleet: consul
	$(GO) build -o bin/bench-fleet ./bench/fleet
	bin/bench-fleet -consul $(CONSUL) -out bench/results $(FLEET_ARGS)

clean:
	rm -rf bin/tierlock dist
