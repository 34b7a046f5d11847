# tagger developer entry points. `make test` is what CI runs (see .ci/run).
SHELL := /usr/bin/env bash
GO ?= go
CONTROLLER_GEN ?= $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
# helm as its release builds are: stamped with the Kubernetes version of its client-go
# (1.37), which helm template and lint assume offline (internal/rig.HelmLDFlags)
HELM_LDFLAGS := -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37
HELM ?= $(GO) run -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@v3.22.0
# The chart README is generated from values.yaml's "# --" comments (make docs).
HELM_DOCS ?= $(GO) run github.com/norwoodj/helm-docs/cmd/helm-docs@v1.14.2
HELM_DOCS_ARGS := --chart-search-root deploy/chart --sort-values-order file --log-level warning
CHART_README := deploy/chart/tagger/README.md
BIN := bin
# The rig binaries live outside the checkout, keyed by version (hack/testbin.sh).
export TAGGER_TESTBIN ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tagger/testbin/bin
export OTEL_TRACES_EXPORTER := none

.PHONY: all build image generate docs verify-generated testbin deps test unit lint demo clean bench bench-controller fuzz probe release

all: build

# What --version prints and tagger_build_info reports (pkg/version). DATE is
# the commit's date, not the clock's, so the same commit builds the same bytes.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE ?= $(shell git log -1 --format=%cI 2>/dev/null)
VERSION_PKG := github.com/tagger-project/tagger/pkg/version
LDFLAGS := -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Commit=$(COMMIT) -X $(VERSION_PKG).Date=$(DATE)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## image: build the Dockerfile with BuildKit, no Docker engine (root; docs/local-cluster.md,
## "The tagger image"): pushed to IMAGE_DEST (a plain-HTTP registry, HOST:PORT/repo:tag)
## when set, else written to the OCI layout tarball IMAGE_OCI
IMAGE_OCI ?= $(BIN)/tagger-image.tar
image: testbin deps
	$(GO) run ./hack/image -version '$(VERSION)' -commit '$(COMMIT)' -date '$(DATE)' \
		$(if $(IMAGE_DEST),-dest '$(IMAGE_DEST)',-oci '$(IMAGE_OCI)')

## generate: deepcopy and CRD YAML from api/ (controller-gen); the chart's
## templates/crds.yaml renders the copy in its files/crds; the chart README
generate: docs
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:dir=deploy/crds
	rm -f deploy/chart/tagger/files/crds/*.yaml && cp deploy/crds/*.yaml deploy/chart/tagger/files/crds/

## docs: the chart's README.md from its README.md.gotmpl and the "# --"
## comments in values.yaml (helm-docs)
docs:
	$(HELM_DOCS) $(HELM_DOCS_ARGS)

## verify-generated: fail when generated files are stale
verify-generated: generate
	@git diff --exit-code -- api deploy/crds deploy/chart/tagger/files/crds $(CHART_README) || \
		{ echo "generated files are stale: run 'make generate' and commit"; exit 1; }

## testbin: build the real binaries the tests use (cached outside the checkout)
testbin:
	TESTBIN_DIR=$(dir $(TAGGER_TESTBIN)) hack/testbin.sh

## lint: gofmt, go vet, go.mod tidy, the layout rule (the node side and the
## controller side never link each other: internal/layout), and the chart
## README current with values.yaml
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit"; exit 1; }
	$(GO) test -count=1 ./internal/layout
	@$(HELM_DOCS) $(HELM_DOCS_ARGS) --dry-run | diff -u $(CHART_README) - || \
		{ echo "$(CHART_README) is stale: run 'make docs' and commit"; exit 1; }

## unit: fast tests that need no rig
unit:
	$(GO) test -race -short ./pkg/... ./api/...

## deps: Debian packages the single-node cluster rig needs (runc, CNI plugins, iptables)
deps:
	hack/ci-deps.sh

## test: the whole suite, race detector on, real components included (the per-package timeout
## leaves room for the first, cold BuildKit build of the image in deploy/charttest)
test: testbin deps lint
	$(GO) test -race -count=1 -timeout 45m ./...

## demo: the controller against a real local apiserver and registry, a Tag gaining generations
demo: testbin
	$(GO) run ./hack/demo

clean:
	rm -rf $(BIN)

## release: what a release publishes, built here into DIST (docs/release.md): static
## linux/amd64 and linux/arm64 binaries, kubectl-tag archives for linux, darwin and windows,
## the chart packaged at the release version, the krew manifest generated from the archives
## (checked by krew's validator and installed with krew), SHA256SUMS. IMAGE_DIGEST
## (sha256:..., the pushed image's) is stamped into the packaged chart's image.digest.
## RELEASE_ARGS adds hack/release flags, e.g. '-plugin-platforms linux/amd64' for a quick look.
DIST ?= dist
IMAGE_DIGEST ?=
RELEASE_ARGS ?=
release:
	TESTBIN_DIR=$(dir $(TAGGER_TESTBIN)) hack/testbin.sh krew >/dev/null
	$(GO) run ./hack/release -out '$(DIST)' -version '$(VERSION)' -commit '$(COMMIT)' -date '$(DATE)' \
		-helm '$(HELM)' -image-digest '$(IMAGE_DIGEST)' \
		-krew-validator '$(TAGGER_TESTBIN)/validate-krew-manifest' -krew '$(TAGGER_TESTBIN)/krew' $(RELEASE_ARGS)

## fuzz: every Go fuzz target (mirror routing, webhook parsers and signatures, the
## hosts.toml reader) for FUZZTIME each; failing inputs land in testdata/fuzz as seeds
FUZZTIME ?= 30s
fuzz:
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

## probe: hostile requests, slow and idle connections and bursts against a node agent and
## the webhook receivers, in-process on the real registry and apiserver (docs/hardening.md)
probe: testbin
	$(GO) run ./hack/probe

## bench: the node mirror against the distribution registry and a minimal server, and the
## bundled-registry copy against skopeo and crane (docs/benchmarks.md; apt-get install -y skopeo)
bench: testbin
	hack/bench/mirror.sh
	$(GO) run ./hack/bench/copy

## bench-controller: webhook -> node pin latency and 5,000 Tags at checkInterval 15m
## (about 25 minutes; docs/benchmarks.md "Controller and webhooks")
bench-controller: testbin
	$(GO) run ./hack/bench/controller -interval 15m -measure 16m30s -scale-kube-api-qps default
