"""Both Triton profiles, the TensorRT engine plan around them, and their agreement with the ONNX.

TensorRT cannot be installed here, so the engine builder's TensorRT calls run against a
recording stand-in; everything else (shapes, names, Triton's selection rule, the
repository walk, the CLI) runs for real.
"""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from predictor import engines, repository
from predictor.configs import cpu_config, gpu_config, render
from preprocessing.specs import ONNX_FILENAME, SPECS, ModelSpec
from transformer.config import Settings

ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = ROOT / "model_repository"
PROFILES: dict[str, Callable[[ModelSpec], mc.ModelConfig]] = {
    "cpu": cpu_config,
    "gpu": gpu_config,
}
ONNX_TO_TRITON = {onnx.TensorProto.UINT8: mc.TYPE_UINT8, onnx.TensorProto.FLOAT: mc.TYPE_FP32}


def exported_onnx(spec: ModelSpec) -> Path:
    path = MODEL_REPOSITORY / spec.name / str(spec.version) / ONNX_FILENAME
    if not path.is_file():
        pytest.fail(f"{path} missing: run `make models` (make test does)")
    return path


@pytest.fixture
def gpu_repository(tmp_path: Path) -> Path:
    onnx_files = {spec.name: exported_onnx(spec) for spec in SPECS}
    return repository.build_gpu(tmp_path / "gpu", onnx_files)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_config_parses_strictly_into_model_config(spec: ModelSpec, profile: str) -> None:
    config = PROFILES[profile](spec)
    assert text_format.Parse(render(config), mc.ModelConfig()) == config


QUEUE_SIZES: dict[str, Callable[[ModelSpec], int]] = {
    "cpu": lambda spec: spec.cpu_max_queue_size,
    "gpu": lambda spec: spec.gpu_max_queue_size,
}
TRANSFORMER_TRITON_TIMEOUT_US = Settings.model_fields["triton_timeout_s"].default * 1e6


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_queue_is_bounded_and_rejects_stale_requests(spec: ModelSpec, profile: str) -> None:
    parsed = text_format.Parse(render(PROFILES[profile](spec)), mc.ModelConfig())
    policy = parsed.dynamic_batching.default_queue_policy
    assert parsed.dynamic_batching.HasField("default_queue_policy")
    assert policy.max_queue_size == QUEUE_SIZES[profile](spec)
    # At least one full batch fits, so the batcher can still form max-size batches.
    assert policy.max_queue_size >= spec.max_batch_size
    assert policy.default_timeout_microseconds == spec.queue_timeout_us
    # Below the transformer's deadline: Triton drops what its caller no longer waits for.
    assert 0 < policy.default_timeout_microseconds < TRANSFORMER_TRITON_TIMEOUT_US
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert policy.allow_timeout_override


def test_queue_policy_comes_from_the_spec() -> None:
    spec = ModelSpec(
        name="x", labels=("a", "b"), max_batch_size=8, gpu_opt_batch=4,
        queue_timeout_us=3_000_000, cpu_queue_batches=2, gpu_queue_batches=5,
    )
    cpu = cpu_config(spec).dynamic_batching.default_queue_policy
    gpu = gpu_config(spec).dynamic_batching.default_queue_policy
    assert (cpu.max_queue_size, gpu.max_queue_size) == (16, 40)
    assert cpu.default_timeout_microseconds == gpu.default_timeout_microseconds == 3_000_000
    with pytest.raises(ValueError, match="queue"):
        ModelSpec(name="x", labels=("a", "b"), gpu_opt_batch=4, cpu_queue_batches=0)
    with pytest.raises(ValueError, match="queue"):
        ModelSpec(name="x", labels=("a", "b"), gpu_opt_batch=4, queue_timeout_us=0)


def test_strict_parse_rejects_unknown_fields() -> None:
    with pytest.raises(text_format.ParseError, match="max_batch_sise"):
        text_format.Parse('name: "x"\nmax_batch_sise: 8\n', mc.ModelConfig())


def test_gpu_repository_files_parse_strictly(gpu_repository: Path) -> None:
    for spec in SPECS:
        text = (gpu_repository / spec.name / "config.pbtxt").read_text()
        assert text_format.Parse(text, mc.ModelConfig()) == gpu_config(spec)
        assert sorted(p.name for p in (gpu_repository / spec.name / str(spec.version)).iterdir()) == [
            ONNX_FILENAME
        ]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_gpu_config_matches_the_engine_profile(spec: ModelSpec) -> None:
    config = gpu_config(spec)
    shapes = engines.profile_shapes(spec)
    assert config.platform == "tensorrt_plan"
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (mc.ModelInstanceGroup.KIND_GPU, spec.gpu_instances)
    ]
    assert shapes.max[0] == config.max_batch_size == spec.max_batch_size
    preferred = list(config.dynamic_batching.preferred_batch_size)
    assert preferred == [shapes.opt[0], shapes.max[0]]
    assert all(shapes.min[0] <= size <= shapes.max[0] for size in preferred)
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds < spec.max_queue_delay_us
    warmups = {w.batch_size: w.inputs[spec.input_name] for w in config.model_warmup}
    assert sorted(warmups) == sorted({1, *preferred})
    for warmup in warmups.values():
        assert warmup.data_type == mc.TYPE_UINT8 and warmup.zero_data
        assert tuple(warmup.dims) == shapes.min[1:]
    assert dict(config.cc_model_filenames) == engines.cc_model_filenames()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_profile_shapes_span_one_to_max_batch(spec: ModelSpec) -> None:
    shapes = engines.profile_shapes(spec)
    assert shapes.min == (1, *spec.input_dims)
    assert shapes.opt == (spec.gpu_opt_batch, *spec.input_dims)
    assert shapes.max == (spec.max_batch_size, *spec.input_dims)
    assert all(a <= b <= c for a, b, c in zip(shapes.min, shapes.opt, shapes.max))


def test_opt_batch_outside_the_profile_is_rejected() -> None:
    with pytest.raises(ValueError, match="gpu_opt_batch"):
        ModelSpec(name="x", labels=("a", "b"), max_batch_size=8, gpu_opt_batch=16)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_config_io_matches_the_exported_onnx(spec: ModelSpec, profile: str) -> None:
    config = PROFILES[profile](spec)
    graph = onnx.load(exported_onnx(spec), load_external_data=False).graph
    for tensors, declared in ((graph.input, config.input), (graph.output, config.output)):
        assert [t.name for t in tensors] == [d.name for d in declared]
        for tensor, entry in zip(tensors, declared):
            tensor_type = tensor.type.tensor_type
            assert ONNX_TO_TRITON[tensor_type.elem_type] == entry.data_type
            batch, *dims = tensor_type.shape.dim
            # A fixed batch dimension would make the engine fail at batch > 1.
            assert batch.dim_param and not batch.dim_value
            assert tuple(d.dim_value for d in dims) == tuple(entry.dims)


def test_engine_file_names_carry_compute_capability_and_tensorrt_version() -> None:
    assert engines.engine_filename("8.6", "10.5.0.18") == "model.sm86.trt10.5.0.plan"
    assert engines.engine_filename(" 9.0 ") == f"model.sm90.trt{engines.TENSORRT_VERSION}.plan"
    assert engines.engine_filename("10.0", "11.0.1") == "model.sm100.trt11.0.1.plan"
    names = set(engines.cc_model_filenames().values())
    assert len(names) == len(engines.COMPUTE_CAPABILITIES)
    for bad in ("8", "sm86", "8.6.1", ""):
        with pytest.raises(ValueError):
            engines.compute_capability(bad)
    with pytest.raises(ValueError):
        engines.tensorrt_release("10.5")
    with pytest.raises(ValueError, match="twice"):
        engines.cc_model_filenames(["8.0", "8.0"])


def test_triton_selects_each_listed_gpus_engine_and_nothing_else(gpu_repository: Path) -> None:
    for spec in SPECS:
        text = (gpu_repository / spec.name / "config.pbtxt").read_text()
        filenames, default = engines.configured_engines(text)
        assert filenames == dict(gpu_config(spec).cc_model_filenames)
        assert default == engines.TRITON_DEFAULT_MODEL_FILENAME
        for cc in engines.COMPUTE_CAPABILITIES:
            assert engines.select_engine(filenames, cc, default) == engines.engine_filename(cc)
        # An unlisted GPU falls back to a file no repository holds: it fails to load
        # rather than run an engine built for another architecture.
        fallback = engines.select_engine(filenames, "12.0", default)
        assert not (gpu_repository / spec.name / str(spec.version) / fallback).exists()


def test_plan_builds_exactly_what_triton_would_load(gpu_repository: Path) -> None:
    jobs = engines.plan_repository(gpu_repository, "8.0")
    assert [(j.spec, j.onnx, j.engine) for j in jobs] == [
        (spec, version_dir / ONNX_FILENAME, version_dir / "model.sm80.trt10.5.0.plan")
        for spec in SPECS
        for version_dir in [gpu_repository / spec.name / str(spec.version)]
    ]
    with pytest.raises(engines.EngineError, match="compute capability 12.0"):
        engines.plan_repository(gpu_repository, "12.0")
    with pytest.raises(engines.EngineError, match="TensorRT 10.6.0"):
        engines.plan_repository(gpu_repository, "8.0", tensorrt_version="10.6.0")
    (gpu_repository / SPECS[0].name / str(SPECS[0].version) / ONNX_FILENAME).unlink()
    with pytest.raises(engines.EngineError, match="lacks config.pbtxt or"):
        engines.plan_repository(gpu_repository, "8.0")


def test_build_repository_writes_missing_engines_atomically(gpu_repository: Path) -> None:
    built: list[str] = []

    def fake_build(onnx_path: Path, spec: ModelSpec) -> bytes:
        built.append(spec.name)
        return f"plan of {onnx_path.parent.parent.name}".encode()

    jobs = engines.plan_repository(gpu_repository, "8.6")
    assert engines.build_repository(jobs, build=fake_build) == [j.engine for j in jobs]
    for job in jobs:
        assert job.engine.read_bytes() == f"plan of {job.spec.name}".encode()
        assert job.engine.stat().st_mode & 0o777 == 0o644
    assert not list(gpu_repository.rglob(".model.*"))
    assert engines.build_repository(jobs, build=fake_build) == []
    rebuilt = engines.build_repository(jobs, build=fake_build, force=True)
    assert rebuilt == [j.engine for j in jobs]
    assert built == [s.name for s in SPECS] * 2


class FakeTensorRT(types.ModuleType):
    """Records the TensorRT 10 Python API calls build_engine makes (names as in its docs)."""

    uint8, float32 = "uint8", "float32"

    def __init__(
        self, spec: ModelSpec, version: str = "10.5.0.18", parses: bool = True,
        input_dtype: str = "uint8",
    ) -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls: list[tuple] = []
        calls = self.calls

        def recorder(name: str) -> Callable[..., None]:
            return lambda *args: calls.append((name, *args))

        self.Logger = type("Logger", (), {"WARNING": "warning", "__init__": lambda s, level: None})
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        self.BuilderFlag = types.SimpleNamespace(FP16="fp16")
        tensor_in = types.SimpleNamespace(
            name=spec.input_name, dtype=input_dtype, shape=(-1, *spec.input_dims)
        )
        network = types.SimpleNamespace(
            num_inputs=1, num_outputs=1,
            get_input=lambda i: tensor_in,
            get_output=lambda i: types.SimpleNamespace(name=spec.output_name),
        )
        config = types.SimpleNamespace(
            set_memory_pool_limit=recorder("set_memory_pool_limit"),
            set_flag=recorder("set_flag"),
            add_optimization_profile=recorder("add_optimization_profile"),
        )
        self.profile = profile = types.SimpleNamespace(set_shape=recorder("set_shape"))

        def create_network(flags: int) -> types.SimpleNamespace:
            calls.append(("create_network", flags))
            return network

        def build(net: object, cfg: object) -> bytes:
            calls.append(("build_serialized_network", net is network, cfg is config))
            return b"serialized plan"

        self.Builder = lambda logger: types.SimpleNamespace(
            create_network=create_network,
            create_builder_config=lambda: config,
            create_optimization_profile=lambda: profile,
            build_serialized_network=build,
        )

        def parser(net: object, logger: object) -> types.SimpleNamespace:
            return types.SimpleNamespace(
                parse_from_file=lambda path: calls.append(("parse_from_file", path)) or parses,
                num_errors=0 if parses else 1,
                get_error=lambda i: "Unsupported ONNX op",
            )

        self.OnnxParser = parser


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeTensorRT]:
    def install(**kwargs: object) -> FakeTensorRT:
        module = FakeTensorRT(SPECS[0], **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        return module

    return install


def test_build_engine_uses_fp16_and_the_profile(
    fake_tensorrt: Callable[..., FakeTensorRT],
) -> None:
    spec = SPECS[0]
    trt = fake_tensorrt()
    assert engines.build_engine(Path("m.onnx"), spec, workspace_bytes=1 << 30) == b"serialized plan"
    shapes = engines.profile_shapes(spec)
    assert trt.calls == [
        ("create_network", 0),
        ("parse_from_file", "m.onnx"),
        ("set_memory_pool_limit", "workspace", 1 << 30),
        ("set_flag", "fp16"),
        ("set_shape", spec.input_name, shapes.min, shapes.opt, shapes.max),
        ("add_optimization_profile", trt.profile),
        ("build_serialized_network", True, True),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "10.6.0"}, "could not load these engines"),
        ({"parses": False}, "Unsupported ONNX op"),
        ({"input_dtype": "float32"}, "must be uint8"),
    ],
)
def test_build_engine_refuses_what_triton_could_not_serve(
    fake_tensorrt: Callable[..., FakeTensorRT], kwargs: dict, message: str
) -> None:
    fake_tensorrt(**kwargs)
    with pytest.raises(engines.EngineError, match=message):
        engines.build_engine(Path("m.onnx"), SPECS[0])


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_plans_without_gpu_and_fails_clearly_without_tensorrt(gpu_repository: Path) -> None:
    plan = _run(
        "-m", "predictor.engines", "build-repository", f"--repository={gpu_repository}",
        "--dry-run", "--compute-capability=8.9",
    )
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.count(engines.engine_filename("8.9")) == len(SPECS)
    build = _run(
        "-m", "predictor.engines", "build", f"--onnx={exported_onnx(SPECS[1])}",
        f"--model={SPECS[1].name}", f"--out={gpu_repository}/x.plan",
    )
    assert build.returncode == 1
    assert "TensorRT's Python bindings are not installed" in build.stderr


def test_engine_builder_imports_neither_tritonclient_nor_protobuf() -> None:
    probe = (
        "import sys, predictor.engines; "
        "assert not {'tritonclient', 'google.protobuf', 'tensorrt'} & set(sys.modules)"
    )
    result = _run("-c", probe)
    assert result.returncode == 0, result.stderr


def test_build_repository_command_writes_the_gpu_profile(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    result = _run(
        "-m", "predictor", "build-repository", "--profile=gpu", f"--out={out}",
        *(f"--onnx={spec.name}={exported_onnx(spec)}" for spec in SPECS),
        "--compute-capability=8.0", "--compute-capability=9.0",
    )
    assert result.returncode == 0, result.stderr
    for spec in SPECS:
        config = text_format.Parse((out / spec.name / "config.pbtxt").read_text(), mc.ModelConfig())
        assert config == gpu_config(spec, ["8.0", "9.0"])
