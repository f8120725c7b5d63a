# meshward — run `make help` for the targets.
#
# Everything a target needs is built or installed by the target itself:
# Go modules come from the module proxy; Debian packages (when a later
# target needs them) through apt-get.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO       ?= go
BUILD    := build
WASM     := $(BUILD)/meshward.wasm
PASSWASM := $(BUILD)/passthrough.wasm
BIN      := $(BUILD)/meshward

# Public development data (see ../shared/data/README.md); tests that need it
# say so loudly when it is absent.
export MESHWARD_DATA ?= $(abspath ../shared/data)
# The filter tests and benchmarks run these exact files.
export MESHWARD_WASM := $(abspath $(WASM))
export MESHWARD_PASSTHROUGH_WASM := $(abspath $(PASSWASM))
# Kubernetes tests (internal/kubetest) run these kube-apiserver, kubectl and
# etcd, built by `make kube` into a cache named by version (see hack/kube).
KUBE_VERSION := v1.37.2
export MESHWARD_KUBE_CACHE ?= $(HOME)/.cache/meshward/kube-$(KUBE_VERSION)
export MESHWARD_KUBE_ASSETS ?= $(MESHWARD_KUBE_CACHE)/bin

# Compiled machine code of the .wasm files, kept between test processes
# (filter/wasmhost.CompilationCache): compiling the filter costs seconds,
# and dozens of processes load it. Test binaries cannot read their wazero's
# version, so the directory is named by it here.
ifndef MESHWARD_WASM_CACHE
MESHWARD_WASM_CACHE := $(HOME)/.cache/meshward/wazero-$(shell $(GO) list -m -f '{{.Version}}' github.com/tetratelabs/wazero)
endif
export MESHWARD_WASM_CACHE

WASM_ENV   := GOOS=wasip1 GOARCH=wasm
WASM_FLAGS := -trimpath -buildvcs=false -buildmode=c-shared
# Modules are built by filter/wasmbuild, the one way tests build them too:
# reproducible (no commit stamped in, so the Wasm image digest the manifests
# pin follows from the sources alone) and with Go's runtime patched so it
# survives Envoy 1.33-1.38, whose host answers poll_oneoff with ENOSYS (see
# RATIONALE.md).
WASMBUILD  := $(GO) run ./filter/wasmbuild/cmd/wasmbuild -overlay-dir $(BUILD)/overlay
GO_SOURCES := $(shell find . -name '*.go' -not -path './build/*') go.mod go.sum filter/goabi/go.mod

.PHONY: help build wasm test unit check lint deps kube e2e bench eval run fuzz clean image push manifests soak

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

build: $(BIN) $(WASM) ## build the meshward binary and the filter (.wasm)

wasm: $(WASM) ## build the filter: build/meshward.wasm

$(WASM): $(GO_SOURCES)
	@mkdir -p $(BUILD)
	$(WASMBUILD) -o $@ ./filter

$(PASSWASM): $(GO_SOURCES)
	@mkdir -p $(BUILD)
	$(WASMBUILD) -o $@ ./filter/internal/passthrough

$(BIN): $(GO_SOURCES)
	@mkdir -p $(BUILD)
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./control-plane/cmd/meshward

OCI        := $(BUILD)/oci
REGISTRY   ?= ghcr.io/meshward
TAG        ?= 0.1.0
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
# The image's binary: static (the base is empty), stripped, reproducible.
IMAGE_BIN  := $(BUILD)/image/meshward-linux-$(IMAGE_ARCH)
$(IMAGE_BIN): $(GO_SOURCES)
	@mkdir -p $(dir $@)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -buildvcs=false -ldflags='-s -w' -o $@ ./control-plane/cmd/meshward

image: $(BIN) $(WASM) $(IMAGE_BIN) ## OCI images without Docker: build/oci/wasm (the filter, for WasmPlugin) and build/oci/meshward
	$(BIN) image build -wasm $(WASM) -binary $(IMAGE_BIN) -arch $(IMAGE_ARCH) -out $(OCI)

push: image ## push the images to REGISTRY (default ghcr.io/meshward) with TAG (INSECURE=1 for a plain-HTTP registry)
	$(BIN) image push $(if $(INSECURE),-insecure) $(OCI)/wasm $(REGISTRY)/meshward-wasm:$(TAG)
	$(BIN) image push $(if $(INSECURE),-insecure) $(OCI)/meshward $(REGISTRY)/meshward:$(TAG)

manifests: $(WASM) ## regenerate manifests/: the dashboard, the alert rules, the module digests the manifests pin
	$(GO) run ./manifests/internal/gen -dir manifests -wasm $(WASM)

check: ## gofmt, go vet, and a wasip1 cross-build of models/ and filter/
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd filter/goabi && $(GO) vet ./... && $(WASM_ENV) $(GO) vet ./...
	$(WASM_ENV) $(GO) vet ./models/...
	$(WASM_ENV) $(GO) build ./models/... && $(WASM_ENV) $(GO) build $(WASM_FLAGS) -o /dev/null ./filter

# golangci-lint, built once from the module proxy into a cache named by its
# version (a clean clone reuses it, as it reuses the kube binaries).
GOLANGCI_VERSION := v2.15.0
GOLANGCI := $(HOME)/.cache/meshward/tools/golangci-lint-$(GOLANGCI_VERSION)
$(GOLANGCI):
	@mkdir -p $(dir $@)
	cd $$(mktemp -d) && GOBIN=$(dir $@) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	mv $(dir $@)golangci-lint $@

lint: $(GOLANGCI) ## golangci-lint with .golangci.yml (errcheck, staticcheck, unused, gocritic, govet, goimports)
	$(GOLANGCI) run --allow-serial-runners ./...
	cd filter/goabi && $(GOLANGCI) run --allow-serial-runners --config ../../.golangci.yml ./...

# go test's own vet pass is off: check has just run go vet ./... (all of
# its analyzers, not go test's subset) and lint runs govet again.
test: check lint deps kube $(WASM) $(PASSWASM) $(BIN) ## everything CI runs: check, lint, unit and .wasm tests, short fuzzing
	MESHWARD_BIN=$(abspath $(BIN)) $(GO) test -p $(TEST_P) -vet=off -count=1 -timeout 15m $$($(GO) list ./... | grep -v /e2e)
	cd filter/goabi && $(GO) test -count=1 ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME) FUZZMINIMIZETIME=$(TEST_FUZZMINIMIZETIME)

soak: $(WASM) ## the full soak of the compiled filter on every Envoy host profile (1,000,000 requests, 100 model swaps each)
	$(GO) test -count=1 -run '^TestSoak$$' -v -timeout 60m ./replay/soak/ -soak.requests 500000 -soak.updates 100

# The quick loop: go test -short skips what needs a kube-apiserver (kubetest)
# and the long soaks, each saying so; no check, no kube build, no fuzzing.
# Redis tests still run on a real redis-server.
unit: deps $(WASM) $(PASSWASM) ## the quick loop (go test -short): no API server, no fuzzing, no long soaks
	$(GO) test -short -count=1 $$($(GO) list ./... | grep -v /e2e)
	cd filter/goabi && $(GO) test -short -count=1 ./...

# Test packages run four at a time (go test's default is one per core):
# many wait on leases, TTLs, API servers and Redis rather than compute,
# and two at a time left a core of this 2-core machine idle a quarter of
# the time (go test -p 4 vs -p 2, same minutes: 133 s vs 165 s).
TEST_P ?= 4

FUZZTIME ?= 30s
# make test's short fuzzing: every target, this many executions each, on
# top of the corpus the earlier runs found (kept in Go's cache); make fuzz
# is the long run (`make fuzz FUZZMINIMIZETIME=60s`). Each new input that widens coverage is minimized for at
# most FUZZMINIMIZETIME (go test's default: 60 s): in make test, 1,000
# executions, or one target minimizing large request bodies takes minutes.
TEST_FUZZTIME ?= 50000x
TEST_FUZZMINIMIZETIME ?= 1000x
FUZZMINIMIZETIME ?= 60s
FUZZ_PKGS := ./models/ ./replay/source/ ./replay/source/internal/http1/
fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for pkg in $(FUZZ_PKGS); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg || exit 1; \
	  done; \
	done

deps: ## install what tests need from Debian's packages (redis-server, prometheus and promtool)
	@command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || \
	  { echo "installing redis-server (Debian package)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null; }
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
	  { echo "installing prometheus (Debian package)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

kube: ## build (or reuse) kube-apiserver, kubectl and etcd for the Kubernetes tests
	GO=$(GO) hack/kube/build.sh

e2e: $(WASM) ## end-to-end tests (the Envoy test runs when envoy is on PATH)
	$(GO) test -count=1 -v -timeout 10m ./e2e/...

# The wazero CLI runs test binaries built for wasip1 (make bench's models
# figures in wasm); the version is the one go.mod's filter host uses.
WAZERO := $(BUILD)/tools/wazero
$(WAZERO):
	GOBIN=$(abspath $(BUILD)/tools) $(GO) install github.com/tetratelabs/wazero/cmd/wazero@$$($(GO) list -m -f '{{.Version}}' github.com/tetratelabs/wazero)

bench: deps kube $(WASM) $(PASSWASM) $(WAZERO) ## print the figures users care about (see README)
	@# Each binding runs in its own process, so one's garbage does not slow the
	@# other; GOGC=400 calms the host-side emulator's garbage collection, which
	@# otherwise adds ±1 µs of noise to per-request figures (the guest's own GC
	@# is not affected).
	@median() { grep -oE "[0-9.]+ $$1" | sort -n | awk '{v[NR]=$$1} END {print v[int((NR+1)/2)]}'; }; \
	for b in wasm-envoy-1.33 wasm-envoy-1.39 wasm-sdk native; do \
	  out=$(BUILD)/bench-filter-$$b.txt; \
	  GOGC=400 $(GO) test -run '^$$' -bench "^BenchmarkRequest\$$/$$b\$$" -benchmem -benchtime 20000x -count 5 ./filter/plugin/ 2>&1 | grep -v proxy_ > $$out; \
	  case $$b in \
	  native) echo "filter, native (emulator included): $$(median ns/op < $$out) ns/request, $$(median allocs/op < $$out) allocs";; \
	  wasm-sdk) echo "filter as .wasm on the SDK's wazero wrapper: $$(median filter-ns/op < $$out) ns/request; pass-through $$(median passthrough-ns/op < $$out) ns; own cost $$(median own-ns/op < $$out) ns";; \
	  *) echo "filter as .wasm, host profile $${b#wasm-}: $$(median filter-ns/op < $$out) ns/request; pass-through $$(median passthrough-ns/op < $$out) ns; filter's own cost $$(median own-ns/op < $$out) ns (median of 5; in thread CPU time $$(median own-cpu-ns/op < $$out) ns)";; \
	  esac; \
	done
	@echo "the filter's own cost for a POST of a 64 KiB form (max_body_bytes' default; read as it passes, in 16 KiB chunks), beside the typical request's above:"
	@median() { grep -oE "[0-9.]+ $$1" | sort -n | awk '{v[NR]=$$1} END {print v[int((NR+1)/2)]}'; }; \
	for b in wasm-envoy-1.33 wasm-envoy-1.39; do \
	  out=$(BUILD)/bench-filter-body64k-$$b.txt; \
	  GOGC=400 $(GO) test -run '^$$' -bench "RequestBody64K/$$b\$$" -benchtime 200x -count 3 ./filter/plugin/ 2>&1 | grep -v proxy_ > $$out; \
	  echo "  host profile $${b#wasm-}: filter's own cost $$(median own-ns/op < $$out) ns per 64 KiB request (thread CPU $$(median own-cpu-ns/op < $$out) ns)"; \
	done
	@echo "guest memory per VM, steady, with the 50-service model (40,000 mesh requests, 20 model swaps; target ≤ 16 MiB):"
	@$(GO) test -run '^$$' -bench 'GuestMemory' -benchtime 1x ./replay/soak/ 2>&1 | grep -E '^Benchmark' | tee $(BUILD)/bench-guest-memory.txt
	@echo "models (scoring a request against a 50-service model; training on 1 M requests; model size):"
	@$(GO) test -run '^$$' -bench 'Score$$|ScoreMesh|ModelSize' -benchmem ./models/ | grep -E '^Benchmark' | tee $(BUILD)/bench-models.txt
	@$(GO) test -run '^$$' -bench 'TrainMillion' -benchtime 1x -benchmem ./models/ | grep -E '^Benchmark' | tee -a $(BUILD)/bench-models.txt
	@echo "models compiled to wasm and run by wazero, as in the filter (scoring a mesh request; the content model's share):"
	@$(WASM_ENV) $(GO) test -c -o $(BUILD)/models.test.wasm ./models/
	@cd models && $(abspath $(WAZERO)) run -mount /:/ $(abspath $(BUILD))/models.test.wasm -test.run '^$$' \
	  -test.bench 'ScoreMesh|Content/' -test.benchtime 20000x | grep -E '^Benchmark' | tee $(abspath $(BUILD))/bench-models-wasm.txt
	@echo "replay throughput over 20,000 generated mesh requests (requests/s, heap):"
	@$(GO) test -run '^$$' -bench 'Runner' -benchtime 3x ./replay/runner/ 2>&1 | grep -E '^Benchmark' | tee $(BUILD)/bench-replay.txt
	@echo "collector ingest into a real redis-server (records/s; redis-benchmark's pipelined SETs/s beside it):"
	@$(GO) test -run '^$$' -bench 'Ingest' -benchtime 200x ./control-plane/store/ 2>&1 | grep -E '^Benchmark' | tee $(BUILD)/bench-store.txt
	@echo "model rollout over xDS to 1,000 ADS clients (p50, p99):"
	@$(GO) test -run '^$$' -bench 'Rollout1000' -benchtime 3x ./control-plane/xds/ 2>&1 | grep -E '^Benchmark' | tee $(BUILD)/bench-xds.txt
	@echo "an exception from meshward allow (POST /api/v1/exceptions) to the filters of 1,000 ADS clients, real redis-server (p50, p99; target p99 ≤ 2 s; first request let through):"
	@$(GO) test -run '^$$' -bench 'AllowToLetThrough1000' -benchtime 3x ./control-plane/server/ 2>&1 | grep -E '^Benchmark' | tee $(BUILD)/bench-allow.txt
	@echo "scale: meshes of 50, 1,000 and 10,000 services, 200 requests each (internal/scale; each size in its own process;"
	@echo "  targets: training 10,000 services ≤ 60 s, one changed section to its group p99 ≤ 1 s at 1,000 ADS clients):"
	@for n in 50 1000 10000; do \
	  $(GO) test -run '^$$' -bench "Scale/$$n\$$" -benchtime 1x -timeout 30m ./internal/scale/ 2>&1 | grep -E '^Benchmark'; \
	done | tee $(BUILD)/bench-scale.txt | awk 'BEGIN { \
	    printf "%9s %12s %10s %10s %8s %9s %8s %17s %8s\n", "services", "all bytes", "largest", "config", "train s", "heap MB", "RSS MB", "1 section p50/p99", "guest MB" } \
	  { for (i = 5; i < NF; i += 2) v[$$(i+1)] = $$i; \
	    printf "%9d %12d %10d %10d %8.1f %9.0f %8.0f %8.0f/%4.0f ms %8.1f\n", v["services"], v["total-bytes"], v["largest-section-bytes"], \
	      v["largest-config-bytes"], v["train-s"], v["peak-heap-MB"], v["peak-rss-MB"], v["section-p50-ms"], v["section-p99-ms"], v["guest-MB"] }'
	@echo "quarantine: decision → AuthorizationPolicy seen on a watch of a real kube-apiserver (p50, p99; target p50 ≤ 200 ms):"
	@$(GO) test -run '^$$' -bench 'DecisionToPolicy' -benchtime 200x ./control-plane/quarantine/ 2>&1 | grep -E '^Benchmark' | tee $(BUILD)/bench-quarantine.txt
	@echo "reading traffic (requests/s):"
	@$(GO) test -run '^$$' -bench 'ReadRawHTTP|ReadPcap' -benchtime 20x ./replay/source/ 2>&1 | grep -E '^Benchmark' | tee $(BUILD)/bench-sources.txt

SPLIT ?= test
eval: ## detection figures on the public datasets, meshward beside CRS PL1-4 (SPLIT=test|dev)
	$(GO) run ./replay/cmd/eval -split $(SPLIT) -data $(MESHWARD_DATA) -json $(BUILD)/eval-$(SPLIT).json

run: $(BIN) $(WASM) ## the whole loop on generated traffic: filter → collector → Redis → trainer → xDS → filter
	@echo "make run: generated mesh traffic; the first 80 % goes through build/meshward.wasm in learn mode to the collector,"
	@echo "  the trainer learns from Redis (embedded), the model rolls out over xDS to each workload's sidecar, the rest is monitored"
	$(BIN) gen -out $(BUILD)/sample.jsonl
	$(BIN) run --traffic $(BUILD)/sample.jsonl --learn-until 2026-11-03T14:24:00Z --runner wasm --out $(BUILD)/run
	@echo "report: $(BUILD)/run/report.json, per-request scores: $(BUILD)/run/scores.jsonl, policies: $(BUILD)/run/policies/"

clean: ## remove build outputs
	rm -rf $(BUILD)
