"""Export to ONNX and prove the export computes what the torch model computes.

The graph takes ``image`` uint8 ``[N, 224, 224, 3]`` (dynamic N) and returns ``scores``
float32 ``[N, 2]`` = softmax ``[out_of_domain, logo]``. torch 2.13 still has the
TorchScript-based exporter (``dynamo=False``); it needs no extra package and handles this
plain convolutional graph exactly.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from preprocessing.tensor import INPUT_SIZE

INPUT = "image"
OUTPUT = "scores"
OPSET = 17
THREADS = 2  # fixed, so features (and so training) are reproducible on any machine
TOLERANCE = 1e-4


def export_onnx(module: nn.Module, path: Path, output: str | tuple[str, ...],
                metadata: dict[str, str] | None = None) -> None:
    """Export ``module`` (uint8 NHWC in; one output, or a tuple of them) with a dynamic batch dimension."""
    outputs = (output,) if isinstance(output, str) else tuple(output)
    module.eval()
    example = torch.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation on every call, and notes that
        # it cannot fold the static "same" padding slices (they stay in the graph, correct).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            module, (example,), str(path), input_names=[INPUT], output_names=list(outputs),
            dynamic_axes={INPUT: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            opset_version=OPSET, dynamo=False,
        )
    model = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(path: Path, module: nn.Module, images: np.ndarray) -> float:
    """Largest absolute difference between ONNX Runtime and torch on ``images``."""
    module.eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(np.ascontiguousarray(images))).numpy()
    (actual,) = session(path).run(None, {INPUT: images})
    return float(np.abs(actual - expected).max())


def verify(path: Path, module: nn.Module, real: np.ndarray | None = None, seed: int = 0) -> dict[str, float]:
    """Parity at batch 1 and 5, on random and (where given) real images; raises past ``TOLERANCE``."""
    rng = np.random.default_rng(seed)
    random = rng.integers(0, 256, size=(5, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    cases = {"random_batch1": random[:1], "random_batch5": random}
    if real is not None:
        cases.update(real_batch1=real[:1], real_batch5=real[:5])
    diffs = {name: max_difference(path, module, images) for name, images in cases.items()}
    worst = max(diffs, key=diffs.get)
    if diffs[worst] > TOLERANCE:
        raise AssertionError(f"ONNX and torch disagree by {diffs[worst]:.2e} on {worst} (> {TOLERANCE})")
    return diffs
