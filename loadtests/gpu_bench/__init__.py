"""GPU benchmark of both models in one offline script (``python -m loadtests.gpu_bench``).

Runs where only PyTorch (CUDA), numpy, onnx and ONNX Runtime are installed: the exported
ONNX graphs are converted to PyTorch (``convert``), and everything else it needs travels in
a bundle built here (``python -m loadtests.gpu_bench.bundle``), held to the 64 MiB a GPU
machine receives. There is no Triton server there, so the dynamic-batching figures come
from an in-process batcher with Triton's policy (``batcher``), not from Triton.
"""
