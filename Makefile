# Switchyard. The two commands a new user needs (as root, on Debian/Ubuntu):
#   make demo   - build, create a namespace topology, run real traffic through it
#   make test   - every test, including the kernel datapath and end-to-end ones
SHELL := /bin/bash
GO ?= go
BIN := bin/switchyard
# The race detector is on: the control loop, health checks, API and datapath
# accessors run concurrently. GOTESTFLAGS= turns it off.
GOTESTFLAGS ?= -race

.PHONY: all build generate check-generate deps test test-unit demo bench fuzz clean

all: build

build: $(BIN)

$(BIN): $(shell find cmd pkg -name '*.go' -o -name '*.o' 2>/dev/null) go.mod go.sum
	@# The git revision goes into the binary (switchyard version, status),
	@# over a GOFLAGS -buildvcs=false; where git refuses the checkout (owned
	@# by another user: "dubious ownership"), the build goes on without it.
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/switchyard 2>/dev/null || $(GO) build -buildvcs=false -o $(BIN) ./cmd/switchyard

# Regenerate the BPF objects and their Go bindings (needs clang-16, llvm-16).
generate:
	$(GO) generate ./pkg/datapath/

# CI: the committed objects must be exactly what `make generate` produces.
# git diff sees only tracked files: a new program's objects, generated in
# CI's checkout but never committed, are looked for apart.
check-generate: generate
	@git diff --exit-code -- pkg/datapath bpf || { echo "BPF objects are out of date: run 'make generate' and commit the result" >&2; exit 1; }
	@new=$$(git ls-files --others --exclude-standard -- 'pkg/datapath/*_bpfel.*'); \
	if [ -n "$$new" ]; then echo "generated BPF objects not committed: "$$new"; git add and commit them" >&2; exit 1; fi

# Installs what the tests and the demo need on a fresh Debian/Ubuntu machine.
deps:
	@scripts/install-deps.sh

test: deps
	$(GO) test -count=1 -timeout 30m $(GOTESTFLAGS) ./...

demo: deps build
	$(BIN) demo

bench: deps build
	scripts/bench.sh

# Longer fuzzing than the seeds `make test` runs.
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzBalancer -fuzztime=60s ./pkg/datapath/
	$(GO) test -run='^$$' -fuzz=FuzzDecap -fuzztime=60s ./pkg/datapath/
	$(GO) test -run='^$$' -fuzz=FuzzBuild -fuzztime=60s ./pkg/maglev/
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=60s ./pkg/config/

clean:
	rm -rf bin
