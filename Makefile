# Everything a fresh machine needs is installed from here: `make serve` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REPOSITORY_STAMP := build/.model_repository.stamp

.PHONY: venv models serve test loadtest bench clean distclean

venv: $(STAMP)
$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	# torch alone first: 2.13.0 is the CPU wheel on disk; left to the resolver it pulls CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

include predictor/logo/logo.mk
include charts/helm.mk

build/nsfw/model.onnx: $(STAMP) predictor/nsfw_export.py predictor/specs.py
	$(PY) -m predictor export-nsfw --out $@

models: $(REPOSITORY_STAMP)
$(REPOSITORY_STAMP): build/logo/model.onnx build/nsfw/model.onnx predictor/specs.py predictor/repository.py predictor/backend/model.py
	$(PY) -m predictor build-repository --out model_repository \
		--logo-onnx build/logo/model.onnx --nsfw-onnx build/nsfw/model.onnx
	touch $@

serve: models
	$(PY) -m predictor serve

test: models $(HELM)
	$(PY) -m pytest

# `make loadtest` starts its own stack (and fake Commons); `make loadtest URL=http://host:8080`
# loads a deployment instead. LOADTEST_ARGS / BENCH_ARGS pass options (see --help).
loadtest: models
	$(PY) -m loadtests.run $(if $(URL),--url $(URL)) $(LOADTEST_ARGS)

bench: models
	$(PY) -m loadtests.bench $(BENCH_ARGS)

clean:
	rm -rf build model_repository

distclean: clean
	rm -rf $(VENV)
