# syntax=docker/dockerfile:1
# Engine builder (GPU profile) and CPU-profile predictor: the upstream Triton release the
# chart runs, plus
#   - TensorRT's Python bindings of exactly the TensorRT that release runs, for
#     python -m predictor.engines (the chart's engine-build Jobs);
#   - ONNX Runtime for the Python backend model (predictor/backend/model.py, CPU profile).
# Build from the repository root:
#   docker build -f docker/predictor.Dockerfile -t commons-moderation-predictor:0.1.0 .
# TRITON_IMAGE and TENSORRT_VERSION must match predictor/engines.py. Bases are pinned by
# tag; pin them by digest in the publishing pipeline.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
ARG TENSORRT_VERSION=10.5.0

# Triton 24.10 is Ubuntu 22.04 with Python 3.10: fetch wheels for that interpreter.
FROM python:3.10.15-slim-bookworm AS packages
ARG TENSORRT_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# onnxruntime 1.23 is the last release with Python 3.10 wheels.
RUN pip install --only-binary=:all: --target /opt/site-packages \
      --extra-index-url https://pypi.nvidia.com \
      tensorrt-cu12-bindings==${TENSORRT_VERSION} tensorrt-cu12-libs==${TENSORRT_VERSION} \
      onnxruntime==1.23.2 numpy==1.26.4

FROM ${TRITON_IMAGE}
COPY --from=packages /opt/site-packages /opt/site-packages
COPY predictor/__init__.py predictor/engines.py /opt/commons-moderation/predictor/
# The model specs, which predictor.engines imports as preprocessing.specs.
COPY preprocessing/__init__.py preprocessing/specs.py /opt/commons-moderation/preprocessing/
# Triton passes its environment to the Python backend's stub, so the stub imports
# onnxruntime from here too.
ENV PYTHONPATH=/opt/commons-moderation:/opt/site-packages PYTHONDONTWRITEBYTECODE=1
# The upstream image's unprivileged user (uid 1000); the chart runs it read-only.
USER triton-server
