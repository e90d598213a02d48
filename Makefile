# Skiff build, test and benchmark targets.
GO        ?= go
BIN       := bin/skiff
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
K8S_VER   := v1.37.2
LDFLAGS   := -s -w -X main.version=$(VERSION) \
	-X k8s.io/component-base/version.gitVersion=$(K8S_VER)+skiff \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VER)+skiff \
	-X k8s.io/client-go/pkg/version.gitMajor=1 \
	-X k8s.io/client-go/pkg/version.gitMinor=37
# Unit and integration tests; e2e tests exec the built binary.
# Only packages that have tests: building the rest (the kubelet, containerd)
# in race mode would cost minutes and test nothing.
UNIT_DIRS := . ./internal/... ./server/... ./agent/... ./embedded/... ./images/... ./scripts/...
UNIT_PKGS = $(shell $(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' $(UNIT_DIRS))
# Upstream packages Skiff patches whose patches add tests (named TestSkiff*,
# and fuzz tests named FuzzSkiff*, whose seeds run as tests: go test
# -fuzz takes only the main module's packages, so fuzzing is done in a
# copy of the module; in third_party/patches).
PATCH_TEST_PKGS := github.com/emicklei/go-restful/v3 k8s.io/component-base/tracing k8s.io/apiextensions-apiserver/pkg/apiserver k8s.io/apiextensions-apiserver/pkg/controller/establish k8s.io/apimachinery/pkg/watch k8s.io/apimachinery/pkg/util/wait k8s.io/apimachinery/pkg/util/intstr k8s.io/apimachinery/pkg/util/managedfields/internal/skiffapplytest k8s.io/client-go/tools/cache k8s.io/client-go/tools/events k8s.io/client-go/tools/record k8s.io/client-go/util/workqueue k8s.io/client-go/kubernetes k8s.io/client-go/informers k8s.io/apiserver/pkg/server/mux k8s.io/apiserver/pkg/admission k8s.io/apiserver/pkg/admission/metrics k8s.io/apiserver/pkg/admission/plugin/resourcequota k8s.io/apiserver/pkg/endpoints/filters k8s.io/apiserver/pkg/endpoints/filterlatency k8s.io/apiserver/pkg/util/goroutinepool k8s.io/apiserver/pkg/admission/plugin/webhook/mutating k8s.io/apiserver/pkg/registry/rest k8s.io/apiserver/pkg/endpoints/handlers k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager/skiffadmissiontest k8s.io/apiserver/pkg/storage/cacher k8s.io/apiserver/pkg/storage/cacher/store k8s.io/apiserver/pkg/storage/etcd3 k8s.io/apiserver/pkg/storage/storagebackend/factory k8s.io/apiserver/pkg/storage/cacher/progress k8s.io/apiserver/pkg/storage/cacher/consistency k8s.io/kubernetes/pkg/printers k8s.io/kubernetes/pkg/scheduler/framework k8s.io/kubernetes/pkg/scheduler/framework/plugins/nodeaffinity k8s.io/kubernetes/pkg/scheduler/framework/plugins/podtopologyspread k8s.io/kubernetes/pkg/scheduler/framework/runtime k8s.io/kubernetes/pkg/scheduler/backend/queue k8s.io/kubernetes/pkg/scheduler/backend/cache k8s.io/kubernetes/pkg/scheduler/framework/plugins/noderesources k8s.io/kubernetes/pkg/kubelet/volumemanager/... sigs.k8s.io/structured-merge-diff/v6/merge sigs.k8s.io/structured-merge-diff/v6/value
# -trimpath keeps the build cache valid across checkouts: the patched
# modules live under each checkout's .build (see modules).
TEST_FLAGS ?= -race -trimpath -count=1

.PHONY: all modules assets build dist test unit e2e e2e-slow bench fuzz clean

all: build

# The upstream modules Skiff patches (third_party/patches): go.mod replaces
# each with its patched copy under .build/modules, which this makes. Every
# go command of this module needs it first.
modules:
	GO=$(GO) ./scripts/patch-modules.sh

# runc, the shim, CNI plugins and Skiff's images, embedded in the binary.
assets: modules
	GO=$(GO) ./scripts/build-assets.sh

# Profile-guided: go build's default -pgo=auto compiles with
# cmd/skiff/default.pgo (scripts/pgo-profile.sh, `make pgo`).
build: assets
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/skiff

# Regenerates cmd/skiff/default.pgo from the built binary under the
# benchmarks' loads; the next build recompiles every package with it.
.PHONY: pgo
pgo: build
	SKIFF_BIN=$(CURDIR)/$(BIN) ./scripts/pgo-profile.sh

# The downloadable artifact: a launcher and the binary xz-compressed
# (embedded/sfx); it extracts itself on first use. Needs xz-utils.
DIST := dist/skiff
dist: build
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/skiff-sfx ./cmd/skiff-sfx
	$(GO) run ./scripts/sfx -launcher bin/skiff-sfx -payload $(BIN) -out $(DIST)

test: build unit e2e

unit: modules
	$(GO) test $(TEST_FLAGS) $(UNIT_PKGS)
	$(GO) test $(TEST_FLAGS) -run '^(TestSkiff|FuzzSkiff)' $(PATCH_TEST_PKGS)
	cd embedded/build && $(GO) test $(TEST_FLAGS) ./shim

e2e: build
	SKIFF_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 20m -parallel 8 ./tests/...

bench: build
	SKIFF_BIN=$(CURDIR)/$(BIN) ./scripts/bench.sh

# Control loops with simulated nodes only (scheduler throughput, pod
# startup latency, 30,000-pod scale, idle memory); BENCH_SCHED=1 with
# `make bench` runs them after the API benchmarks.
.PHONY: bench-sched
bench-sched: build
	SKIFF_BIN=$(CURDIR)/$(BIN) BENCH_SCHED=only ./scripts/bench.sh

# Node side (root): cold start, pod startup latency, memory, artifact size.
.PHONY: bench-agent
bench-agent: dist
	SKIFF_BIN=$(CURDIR)/$(BIN) SKIFF_DIST=$(CURDIR)/$(DIST) BENCH_AGENT=only ./scripts/bench.sh

clean:
	rm -rf bin .build
fuzz: modules
	for f in FuzzDecodeRecord FuzzDecodeLog FuzzSplitHistKey; do \
		$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime=30s ./server/storage/bolt/ || exit 1; done
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime=30s ./embedded/sfx/
	$(GO) test -run '^$$' -fuzz '^FuzzTxn$$' -fuzztime=30s ./server/storage/etcdapi/
