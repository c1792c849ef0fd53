"""The ideal: a model's FLOPs per image against the GPU's dense FP16 tensor-core peak."""

from __future__ import annotations

import re

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense (no structured sparsity) FP16 tensor-core peaks in TFLOP/s, from the vendors' data
# sheets. Matched on the words of torch's device name: every word in the key must appear,
# first match wins, so the more specific variants come first.
DENSE_FP16_TFLOPS: tuple[tuple[tuple[str, ...], str, float], ...] = (
    (("H200", "NVL"), "H200 NVL", 835.0),
    (("H200",), "H200 SXM", 989.4),
    (("H100", "NVL"), "H100 NVL", 835.0),
    (("H100", "PCIE"), "H100 PCIe", 756.0),
    (("H100",), "H100 SXM", 989.4),
    (("A100",), "A100", 312.0),
    (("L40S",), "L40S", 362.1),
    (("L40",), "L40", 181.0),
    (("L4",), "L4", 121.0),
    (("A10",), "A10", 125.0),
    (("T4",), "T4", 65.0),
    (("V100", "PCIE"), "V100 PCIe", 112.0),
    (("V100",), "V100 SXM2", 125.0),
)


def known_peak(device_name: str) -> tuple[str, float] | None:
    """``(row, TFLOP/s)`` of the table row matching a name like "NVIDIA H100 80GB HBM3"."""
    words = set(re.split(r"[\s\-_]+", device_name.upper()))
    for keys, label, tflops in DENSE_FP16_TFLOPS:
        if all(key in words for key in keys):
            return label, tflops
    return None


def flops_per_image(module: torch.nn.Module, example: torch.Tensor) -> float:
    """Floating-point operations (2 per multiply-add) of one image, counted by torch."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(example[:1])
    return float(counter.get_total_flops())


def ideal_images_per_s(flops: float, peak_tflops: float) -> float:
    return peak_tflops * 1e12 / flops
