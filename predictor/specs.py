"""One spec per served model: the single source of every fact about it.

The transformer (tensor names, labels, batch limits) and the Triton config generator
(``predictor.configs``) both read these, so a name or a shape is never written down twice.
This module imports nothing heavy: the transformer's KServe protos and tritonclient's
protos cannot share one process.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """What Triton serves under ``name`` and how it is batched."""

    name: str
    labels: tuple[str, ...]
    input_name: str = "image"
    input_dims: tuple[int, int, int] = (224, 224, 3)
    output_name: str = "scores"
    max_batch_size: int = 32
    # Long enough to gather requests that arrive together, short next to one CPU batch
    # execution (tens of ms), so a lone request barely waits.
    max_queue_delay_us: int = 2000
    # CPU profile: one instance using both cores beats two instances fighting over them,
    # because ORT parallelises the convolutions of one batch well.
    cpu_instances: int = 1
    cpu_intra_op_threads: int = 2

    @property
    def output_dims(self) -> tuple[int]:
        return (len(self.labels),)


LOGO = ModelSpec(name="logo-detection", labels=("out_of_domain", "logo"))
NSFW = ModelSpec(name="nsfw-detection", labels=("sfw", "nsfw"))
SPECS: tuple[ModelSpec, ...] = (LOGO, NSFW)

ONNX_FILENAME = "model.onnx"
