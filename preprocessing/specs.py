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
    # Softmax outputs in order; the last is what ``prediction`` reports (the gogologo
    # response's ``target``), the others are ``out_of_domain``.
    labels: tuple[str, ...]
    # Where `make models` writes the exported ONNX that the repository serves.
    onnx_path: str = ""
    # Triton's model version: the repository's version directory, reported by Triton in
    # every response and written into the exported ONNX metadata. Bump it whenever the
    # exported model changes.
    version: int = 1
    input_name: str = "image"
    input_dims: tuple[int, int, int] = (224, 224, 3)
    output_name: str = "scores"
    max_batch_size: int = 32
    # Long enough to gather requests that arrive together, short next to one CPU batch
    # execution (tens of ms), so a lone request barely waits.
    max_queue_delay_us: int = 2000
    # Queue policy (both profiles): a full queue or a request older than the timeout is
    # rejected at once, so overload turns into fast 503s instead of unbounded memory and
    # latency. The timeout sits below the transformer's 15 s gRPC deadline: Triton never
    # starts work on a request whose caller has already given up.
    queue_timeout_us: int = 10_000_000
    # CPU: a few batches. A batch of 32 costs 0.2-0.4 CPU-seconds, so a full queue drains in
    # a second or two and queueing adds little latency; beyond that, load is shed as 503s.
    cpu_queue_batches: int = 4
    # CPU profile: one instance using both cores beats two instances fighting over them,
    # because ORT parallelises the convolutions of one batch well.
    cpu_instances: int = 1
    cpu_intra_op_threads: int = 2
    # GPU profile (TensorRT): the engine's optimisation profile spans 1..max_batch_size with
    # its kernels tuned for gpu_opt_batch (predictor.engines.profile_shapes).
    gpu_opt_batch: int = 16
    # One batch of 16-32 images runs in a few ms on a GPU, so a shorter wait than on CPU
    # keeps a lone request fast while concurrent requests still coalesce.
    gpu_max_queue_delay_us: int = 500
    # Two instances per GPU: one batch's host-to-device copy overlaps the other's kernels.
    gpu_instances: int = 2
    # Two GPU instances drain a batch in milliseconds, so a deeper queue absorbs bursts
    # and still empties long before the timeout.
    gpu_queue_batches: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.gpu_opt_batch <= self.max_batch_size:
            raise ValueError(f"{self.name}: gpu_opt_batch must lie in 1..max_batch_size")
        if self.queue_timeout_us <= 0 or min(self.cpu_queue_batches, self.gpu_queue_batches) < 1:
            raise ValueError(f"{self.name}: queue timeout and queue batches must be positive")

    @property
    def target(self) -> str:
        return self.labels[-1]

    @property
    def output_dims(self) -> tuple[int]:
        return (len(self.labels),)

    @property
    def gpu_preferred_batch_sizes(self) -> tuple[int, ...]:
        """The batch sizes TensorRT tuned kernels for (opt and max), so batches the dynamic
        batcher forms run on the fastest tactics."""
        return tuple(sorted({self.gpu_opt_batch, self.max_batch_size}))

    @property
    def cpu_max_queue_size(self) -> int:
        """Requests, not images: Triton counts each queued request once, whatever its batch."""
        return self.cpu_queue_batches * self.max_batch_size

    @property
    def gpu_max_queue_size(self) -> int:
        return self.gpu_queue_batches * self.max_batch_size


LOGO = ModelSpec(
    name="logo-detection",
    labels=("out_of_domain", "logo"),
    onnx_path="build/logo/model.onnx",
    version=7,
)
NSFW = ModelSpec(name="nsfw-detection", labels=("sfw", "nsfw"), onnx_path="build/nsfw/model.onnx")
SPECS: tuple[ModelSpec, ...] = (LOGO, NSFW)

ONNX_FILENAME = "model.onnx"

# Every model the transformer serves, by name: each Triton model under its own name, and
# the video model, which scores sampled frames with nsfw-detection. The launcher, the load
# tests and the chart take the list from here.
VIDEO_MODEL = "nsfw-video-detection"
SERVED_MODELS: tuple[str, ...] = (*(spec.name for spec in SPECS), VIDEO_MODEL)
