"""ModelSpec → Triton ``ModelConfig`` protobuf → ``config.pbtxt``, per deployment profile."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from predictor import engines
from preprocessing.specs import ONNX_FILENAME, ModelSpec


def _io(spec: ModelSpec, config: mc.ModelConfig) -> None:
    config.input.add(name=spec.input_name, data_type=mc.TYPE_UINT8, dims=list(spec.input_dims))
    config.output.add(name=spec.output_name, data_type=mc.TYPE_FP32, dims=list(spec.output_dims))


def _queue_policy(spec: ModelSpec, config: mc.ModelConfig, max_queue_size: int) -> None:
    """Bounded queue, rejecting what waited too long: without a policy Triton's queue is
    unbounded and requests never time out. A client may ask for a shorter timeout."""
    policy = config.dynamic_batching.default_queue_policy
    policy.max_queue_size = max_queue_size
    policy.default_timeout_microseconds = spec.queue_timeout_us
    policy.timeout_action = mc.ModelQueuePolicy.REJECT
    policy.allow_timeout_override = True


def _warmup(spec: ModelSpec, config: mc.ModelConfig, name: str, batch_size: int) -> None:
    """Triton runs warmups before it reports the model ready, so with ``--strict-readiness``
    a replica takes no traffic while its first requests would still be slow."""
    warmup = config.model_warmup.add(name=name, batch_size=batch_size)
    warmup.inputs[spec.input_name].CopyFrom(
        mc.ModelWarmup.Input(data_type=mc.TYPE_UINT8, dims=list(spec.input_dims), zero_data=True)
    )


def cpu_config(spec: ModelSpec) -> mc.ModelConfig:
    """CPU profile: the exported ONNX run by ONNX Runtime inside Triton's Python backend."""
    config = mc.ModelConfig(name=spec.name, backend="python", max_batch_size=spec.max_batch_size)
    _io(spec, config)
    config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    _queue_policy(spec, config, spec.cpu_max_queue_size)
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=spec.cpu_instances)
    parameters = {
        "onnx_file": ONNX_FILENAME,
        "intra_op_threads": str(spec.cpu_intra_op_threads),
        "inter_op_threads": "1",
    }
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    _warmup(spec, config, "zeros", 1)
    return config


def gpu_config(
    spec: ModelSpec,
    compute_capabilities: Iterable[str] = engines.COMPUTE_CAPABILITIES,
    tensorrt_version: str = engines.TENSORRT_VERSION,
) -> mc.ModelConfig:
    """GPU profile: TensorRT plans built on the target GPU (``predictor.engines``).

    ``cc_model_filenames`` lets one repository serve every listed GPU model; the batcher
    prefers the batch sizes the engine's optimisation profile was tuned for.
    """
    config = mc.ModelConfig(
        name=spec.name, platform="tensorrt_plan", max_batch_size=spec.max_batch_size
    )
    _io(spec, config)
    config.dynamic_batching.preferred_batch_size.extend(spec.gpu_preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = spec.gpu_max_queue_delay_us
    _queue_policy(spec, config, spec.gpu_max_queue_size)
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=spec.gpu_instances)
    config.cc_model_filenames.update(
        engines.cc_model_filenames(compute_capabilities, tensorrt_version)
    )
    # TensorRT loads kernels lazily per shape: warm batch 1 and every preferred size.
    for batch_size in sorted({1, *spec.gpu_preferred_batch_sizes}):
        _warmup(spec, config, f"zeros_batch{batch_size}", batch_size)
    return config


def render(config: mc.ModelConfig) -> str:
    """``config.pbtxt`` text; parsing it back with ``text_format.Parse`` is lossless."""
    return text_format.MessageToString(config)
