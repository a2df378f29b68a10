# mmop developer targets. `make help` lists them.
#
# Images need Docker (or any `docker`-compatible CLI via DOCKER=podman); the kind path needs kind
# and kubectl as well. helm defaults to the sandbox's pinned build when it exists.

SHELL := /bin/bash
VERSION := $(shell python -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
VLLM_VERSION := $(shell python -c "import sys;sys.path.insert(0,'operator');from mmop.estimator import PINNED_VLLM_VERSION as v;print(v)")
DOCKER ?= docker
KIND ?= kind
KUBECTL ?= kubectl
SANDBOX_HELM := $(shell python -c "from e2e.sandbox.cluster import find_binaries;print(find_binaries(build=False)['helm'])" 2>/dev/null)
HELM ?= $(if $(SANDBOX_HELM),$(SANDBOX_HELM),helm)
OPERATOR_IMAGE ?= mmop-operator:$(VERSION)
VLLM_IMAGE ?= mmop-vllm:v$(VLLM_VERSION)
KIND_CLUSTER ?= mmop-e2e
CHART := charts/mmop

.PHONY: help test chart-lint chart-template images image-operator image-vllm e2e-kind kind-down

help:  ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

test:  ## lint, format, types and the whole test suite (what CI runs)
	bash .ci/test

chart-lint:  ## helm lint the chart with its defaults and every ci/ values file
	$(HELM) lint --strict $(CHART)
	@for f in $(CHART)/ci/*-values.yaml; do echo "== $$f"; $(HELM) lint --strict $(CHART) -f $$f || exit 1; done

chart-template:  ## render the chart with its defaults (VALUES=file to add one)
	$(HELM) template mmop $(CHART) -n mmop-system $(if $(VALUES),-f $(VALUES))

images: image-operator image-vllm  ## build the operator and vLLM images

image-operator:  ## build the operator image (OPERATOR_IMAGE=...)
	DOCKER_BUILDKIT=1 $(DOCKER) build -f images/operator/Dockerfile -t $(OPERATOR_IMAGE) .

image-vllm:  ## build the pinned vLLM serving image from images/vllm (VLLM_IMAGE=...)
	@test -f images/vllm/Dockerfile || { echo "images/vllm/Dockerfile is missing"; exit 1; }
	DOCKER_BUILDKIT=1 $(DOCKER) build -t $(VLLM_IMAGE) images/vllm

e2e-kind: image-operator  ## kind cluster, operator image loaded, chart installed, e2e tests
	KIND=$(KIND) KUBECTL=$(KUBECTL) HELM=$(HELM) KIND_CLUSTER=$(KIND_CLUSTER) \
	  OPERATOR_IMAGE=$(OPERATOR_IMAGE) bash e2e/kind/run.sh

kind-down:  ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
