"""ModelSpec → Triton ``ModelConfig`` protobuf → ``config.pbtxt``, per deployment profile."""

from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from predictor.specs import ONNX_FILENAME, ModelSpec

def _io(spec: ModelSpec, config: mc.ModelConfig) -> None:
    config.input.add(name=spec.input_name, data_type=mc.TYPE_UINT8, dims=list(spec.input_dims))
    config.output.add(name=spec.output_name, data_type=mc.TYPE_FP32, dims=list(spec.output_dims))


def cpu_config(spec: ModelSpec) -> mc.ModelConfig:
    """CPU profile: the exported ONNX run by ONNX Runtime inside Triton's Python backend."""
    config = mc.ModelConfig(name=spec.name, backend="python", max_batch_size=spec.max_batch_size)
    _io(spec, config)
    config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=spec.cpu_instances)
    parameters = {
        "onnx_file": ONNX_FILENAME,
        "intra_op_threads": str(spec.cpu_intra_op_threads),
        "inter_op_threads": "1",
    }
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    warmup = config.model_warmup.add(name="zeros", batch_size=1)
    warmup.inputs[spec.input_name].CopyFrom(
        mc.ModelWarmup.Input(data_type=mc.TYPE_UINT8, dims=list(spec.input_dims), zero_data=True)
    )
    return config


def render(config: mc.ModelConfig) -> str:
    """``config.pbtxt`` text; parsing it back with ``text_format.Parse`` is lossless."""
    return text_format.MessageToString(config)
