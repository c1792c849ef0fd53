"""ONNX graph → ``torch.nn.Module``, for exactly the operators our two exported models use.

Why not onnx2torch: it imports torchvision (not in our lock, and on a GPU machine its CUDA
build must match torch's), and its Pad/Reshape read shapes from device tensors at run
time, a host synchronisation that CUDA graph capture refuses. Here every shape and
constant is read once, at conversion time, so the forward pass is pure tensor work.

Feed it a constant-folded graph (``fold``): ONNX Runtime's basic level folds the logo
graph's "same"-padding arithmetic into the convolutions and leaves only standard operators.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

Tensor = torch.Tensor
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


def fold(source: Path, target: Path) -> Path:
    """Write ``source`` constant-folded by ONNX Runtime (basic level: ONNX operators only)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return target


class OnnxModule(nn.Module):
    """Runs the graph's nodes in order; float constants and arithmetic in ``dtype``.

    The output is always float32, so FP16 and FP32 scores compare directly. ``channels_last``
    stores convolution weights NHWC, the layout tensor cores want (the NHWC input already is,
    once transposed); on CPU it makes PyTorch's convolutions many times slower.
    """

    def __init__(self, model: onnx.ModelProto, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> None:
        super().__init__()
        graph = model.graph
        self.dtype = dtype
        self.channels_last = channels_last
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        self.input_name = graph.input[0].name
        self.output_names = [o.name for o in graph.output]
        self._constants: dict[str, str] = {}
        for index, init in enumerate(graph.initializer):
            self._add_constant(init.name, numpy_helper.to_array(init), f"c{index}")
        self._steps: list[tuple[Callable[..., Tensor], list[str], list[str]]] = []
        for index, node in enumerate(graph.node):
            if node.op_type == "Constant":
                value = numpy_helper.to_array(node.attribute[0].t)
                self._add_constant(node.output[0], value, f"k{index}")
                continue
            self._steps.append((self._op(node), list(node.input), list(node.output)))

    def _add_constant(self, name: str, value: np.ndarray, key: str) -> None:
        tensor = torch.from_numpy(np.array(value))
        if tensor.is_floating_point():
            tensor = tensor.to(self.dtype)
        if tensor.dim() == 4 and self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        self.register_buffer(key, tensor, persistent=False)
        self._constants[name] = key

    def _const(self, name: str) -> Tensor:
        return getattr(self, self._constants[name])

    def _const_list(self, name: str) -> list[int]:
        return [int(v) for v in self._const(name).tolist()]

    def _op(self, node: onnx.NodeProto) -> Callable[..., Tensor]:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        build = getattr(self, f"_op_{node.op_type}", None)
        if build is None:
            raise NotImplementedError(f"ONNX operator {node.op_type} ({node.name}) is not supported")
        return build(node, attrs)

    def forward(self, x: Tensor) -> Tensor:
        values: dict[str, Tensor] = {self.input_name: x}
        for fn, inputs, outputs in self._steps:
            args = [values[n] if n in values else self._const(n) if n else None for n in inputs]
            values[outputs[0]] = fn(*args)
        return values[self.output_names[0]].float()

    # Operators. Each builder reads attributes and constant inputs once and returns the
    # tensor function of the node's run-time inputs.

    def _op_Identity(self, node, attrs):
        return lambda x: x

    def _op_Cast(self, node, attrs):
        to = attrs["to"]
        if to in _FLOAT_TYPES:
            return lambda x: x.to(self.dtype)
        target = {onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
                  onnx.TensorProto.UINT8: torch.uint8}[to]
        return lambda x: x.to(target)

    def _op_Transpose(self, node, attrs):
        perm = list(attrs["perm"])
        return lambda x: x.permute(perm)

    def _op_Gather(self, node, attrs):
        axis = attrs.get("axis", 0)
        if self._const(node.input[1]).dim() != 1:
            raise NotImplementedError(f"{node.name}: Gather with non-vector indices")
        return lambda x, index: x.index_select(axis, index)

    def _op_Add(self, node, attrs):
        return torch.add

    def _op_Sub(self, node, attrs):
        return torch.sub

    def _op_Mul(self, node, attrs):
        return torch.mul

    def _op_Div(self, node, attrs):
        return torch.div

    def _op_Relu(self, node, attrs):
        return torch.relu

    def _op_Clip(self, node, attrs):
        if self.opset < 11:
            low, high = attrs.get("min"), attrs.get("max")
        else:
            names = list(node.input[1:]) + ["", ""]
            low = float(self._const(names[0])) if names[0] else None
            high = float(self._const(names[1])) if names[1] else None
        return lambda x, *_: torch.clamp(x, low, high)

    def _op_Conv(self, node, attrs):
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise NotImplementedError(f"{node.name}: Conv auto_pad")
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
        symmetric = (top, left) == (bottom, right)
        options = dict(stride=tuple(attrs.get("strides", (1, 1))),
                       dilation=tuple(attrs.get("dilations", (1, 1))),
                       groups=attrs.get("group", 1),
                       padding=(top, left) if symmetric else 0)

        def conv(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
            if not symmetric:
                x = F.pad(x, (left, right, top, bottom))
            return F.conv2d(x, weight, bias, **options)

        return conv

    def _op_MaxPool(self, node, attrs):
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
        kernel, stride = tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", (1, 1)))
        ceil = bool(attrs.get("ceil_mode", 0))

        def pool(x: Tensor) -> Tensor:
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
            return F.max_pool2d(x, kernel, stride, ceil_mode=ceil)

        return pool

    def _op_AveragePool(self, node, attrs):
        if any(attrs.get("pads", [0])):
            raise NotImplementedError(f"{node.name}: padded AveragePool")
        kernel, stride = tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", (1, 1)))
        return lambda x: F.avg_pool2d(x, kernel, stride, ceil_mode=bool(attrs.get("ceil_mode", 0)))

    def _op_GlobalAveragePool(self, node, attrs):
        return lambda x: x.mean(dim=(2, 3), keepdim=True)

    def _op_ReduceMean(self, node, attrs):
        axes = attrs.get("axes") or (self._const_list(node.input[1]) if len(node.input) > 1 else None)
        keep = bool(attrs.get("keepdims", 1))
        return lambda x, *_: x.mean(dim=tuple(axes), keepdim=keep)

    def _op_Reshape(self, node, attrs):
        if attrs.get("allowzero"):
            raise NotImplementedError(f"{node.name}: Reshape with allowzero")
        shape = self._const_list(node.input[1])

        def reshape(x: Tensor, _shape: Tensor) -> Tensor:
            # ONNX: 0 copies the input's dimension, -1 is inferred.
            return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(shape)])

        return reshape

    def _op_Flatten(self, node, attrs):
        axis = attrs.get("axis", 1)
        return lambda x: x.reshape(int(np.prod(x.shape[:axis])), -1)

    def _op_MatMul(self, node, attrs):
        return torch.matmul

    def _op_Gemm(self, node, attrs):
        alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
        trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)

        def gemm(a: Tensor, b: Tensor, c: Tensor | None = None) -> Tensor:
            out = (a.t() if trans_a else a) @ (b.t() if trans_b else b)
            if alpha != 1.0:
                out = out * alpha
            if c is not None:
                out = out + (c * beta if beta != 1.0 else c)
            return out

        return gemm

    def _op_Softmax(self, node, attrs):
        axis = attrs.get("axis", -1 if self.opset >= 13 else 1)
        if self.opset >= 13:
            return lambda x: torch.softmax(x, dim=axis)

        def coerced(x: Tensor) -> Tensor:
            # Before opset 13, Softmax flattens the dimensions from ``axis`` into one.
            flat = x.reshape(int(np.prod(x.shape[:axis])), -1)
            return torch.softmax(flat, dim=1).reshape(x.shape)

        return coerced


def load(path: Path, dtype: torch.dtype = torch.float32, channels_last: bool = False) -> OnnxModule:
    return OnnxModule(onnx.load(str(path)), dtype, channels_last).eval()
