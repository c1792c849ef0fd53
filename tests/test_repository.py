"""The generated model repository agrees with the specs and the exported ONNX graphs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from predictor import repository
from predictor.configs import cpu_config, render
from preprocessing.specs import LOGO, ONNX_FILENAME, SPECS, ModelSpec

REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
ONNX_UINT8 = onnx.TensorProto.UINT8


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_config_parses_strictly_and_matches_spec(spec: ModelSpec) -> None:
    parsed = text_format.Parse((REPOSITORY / spec.name / "config.pbtxt").read_text(), mc.ModelConfig())
    assert parsed == cpu_config(spec)
    assert render(parsed) == render(cpu_config(spec))
    assert parsed.max_batch_size == spec.max_batch_size
    assert parsed.dynamic_batching.max_queue_delay_microseconds > 0
    assert [g.kind for g in parsed.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_onnx_io_matches_spec(spec: ModelSpec) -> None:
    graph = onnx.load(REPOSITORY / spec.name / str(spec.version) / ONNX_FILENAME, load_external_data=False).graph
    (tensor_in,) = graph.input
    (tensor_out,) = graph.output
    assert tensor_in.name == spec.input_name
    assert tensor_in.type.tensor_type.elem_type == ONNX_UINT8
    dims = tensor_in.type.tensor_type.shape.dim
    assert dims[0].dim_param, "batch dimension must be dynamic"
    assert tuple(d.dim_value for d in dims[1:]) == spec.input_dims
    assert tensor_out.name == spec.output_name
    assert tensor_out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert tensor_out.type.tensor_type.shape.dim[1].dim_value == len(spec.labels)


def test_a_model_of_another_version_is_refused(tmp_path) -> None:
    served = REPOSITORY / LOGO.name / str(LOGO.version) / ONNX_FILENAME
    newer = dataclasses.replace(LOGO, version=LOGO.version + 1)
    refusal = f"is {LOGO.name} version {LOGO.version}, the spec serves version {newer.version}"
    with pytest.raises(ValueError, match=refusal):
        repository.build_cpu(tmp_path / "repository", {LOGO.name: served}, (newer,))
    assert not (tmp_path / "repository").exists()
