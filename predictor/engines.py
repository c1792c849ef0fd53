"""TensorRT engines for the GPU profile: build them, name them, and predict which one Triton loads.

A serialised TensorRT plan runs only on the GPU architecture and the TensorRT version that
built it. So engines are built on the target node (the chart's engine-build Job runs
``python -m predictor.engines build-repository``), named by compute capability and
TensorRT version, and Triton picks the right one per GPU through ``cc_model_filenames``.

Only :func:`build_engine` needs TensorRT, imported when called; shapes, names, the
selection rule and the repository walk run and are tested without it. This module imports
nothing beyond the standard library and ``preprocessing.specs``, so the builder image needs
neither tritonclient nor protobuf.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from preprocessing.specs import ONNX_FILENAME, SPECS, ModelSpec

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
TENSORRT_VERSION = "10.5.0"
"""The TensorRT inside ``TRITON_IMAGE`` (Triton 2.51.0). The builder refuses any other
version, because Triton could not deserialise what it built."""

COMPUTE_CAPABILITIES: tuple[str, ...] = ("7.5", "8.0", "8.6", "8.9", "9.0")
"""GPUs the generated configs map to an engine: T4; A100, A30; A10, A40; L4, L40S; H100, H200."""

WORKSPACE_BYTES = 2 << 30
# Triton's fallback when no cc_model_filenames entry matches the GPU.
TRITON_DEFAULT_MODEL_FILENAME = "model.plan"

_CC_PATTERN = re.compile(r"(\d+)\.(\d+)")
# How predictor.configs.render writes the two fields (protobuf text format).
_CC_ENTRY = re.compile(r'cc_model_filenames\s*\{\s*key:\s*"([^"]*)"\s*value:\s*"([^"]*)"\s*\}')
_DEFAULT_FILENAME = re.compile(r'default_model_filename:\s*"([^"]*)"')
# CUdevice_attribute values of the CUDA driver API.
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


class EngineError(RuntimeError):
    """An engine cannot be built here, or Triton would not select the one we would build."""


@dataclass(frozen=True)
class ProfileShapes:
    """One TensorRT optimisation profile for the image input, batch dimension first."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class EngineJob:
    """One engine to build: from ``onnx`` to ``engine``, both inside the model repository."""

    spec: ModelSpec
    onnx: Path
    engine: Path


def profile_shapes(spec: ModelSpec) -> ProfileShapes:
    """Batch 1 to ``max_batch_size``, kernels tuned for ``gpu_opt_batch``.

    The max must equal Triton's ``max_batch_size``: Triton rejects a config whose batches
    the engine cannot run, and a larger profile only wastes tuning time and memory.
    """
    dims = spec.input_dims
    return ProfileShapes(
        min=(1, *dims), opt=(spec.gpu_opt_batch, *dims), max=(spec.max_batch_size, *dims)
    )


def compute_capability(text: str) -> str:
    """Normalise ``"8.6"`` / ``" 8.6 "``; anything else is rejected."""
    match = _CC_PATTERN.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"a compute capability looks like '8.6', not {text!r}")
    return f"{int(match[1])}.{int(match[2])}"


def tensorrt_release(version: str) -> str:
    """``"10.5.0.18"`` → ``"10.5.0"``: plans are portable only within one major.minor.patch."""
    parts = version.split(".")
    if len(parts) < 3 or not all(part.isdigit() for part in parts[:3]):
        raise ValueError(f"a TensorRT version looks like '10.5.0', not {version!r}")
    return ".".join(parts[:3])


def engine_filename(cc: str, tensorrt_version: str = TENSORRT_VERSION) -> str:
    """``"8.6"`` → ``"model.sm86.trt10.5.0.plan"``."""
    major, minor = compute_capability(cc).split(".")
    return f"model.sm{major}{minor}.trt{tensorrt_release(tensorrt_version)}.plan"


def cc_model_filenames(
    capabilities: Iterable[str] = COMPUTE_CAPABILITIES, tensorrt_version: str = TENSORRT_VERSION
) -> dict[str, str]:
    """The ``cc_model_filenames`` map of a GPU config: compute capability → engine file."""
    mapping: dict[str, str] = {}
    for cc in map(compute_capability, capabilities):
        if cc in mapping:
            raise ValueError(f"compute capability {cc} listed twice")
        mapping[cc] = engine_filename(cc, tensorrt_version)
    return mapping


def select_engine(
    filenames: Mapping[str, str],
    cc: str,
    default_model_filename: str = TRITON_DEFAULT_MODEL_FILENAME,
) -> str:
    """The file Triton's TensorRT backend loads on a GPU of compute capability ``cc``.

    Triton looks up ``"<major>.<minor>"`` in ``cc_model_filenames`` and falls back to
    ``default_model_filename``, which our repositories never contain: an unlisted GPU
    fails to load instead of running an engine built for another one.
    """
    return filenames.get(compute_capability(cc), default_model_filename)


def device_compute_capability(device: int = 0) -> str:
    """Compute capability of a CUDA device, read through the driver API.

    ``libcuda.so.1`` comes with the NVIDIA driver on every GPU node, so this needs no CUDA
    Python package in the builder image.
    """
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise EngineError(f"no NVIDIA driver here (libcuda.so.1: {exc})") from exc

    def call(name: str, *args: object) -> None:
        status = getattr(cuda, name)(*args)
        if status != 0:
            raise EngineError(f"{name} failed with CUDA driver error {status}")

    call("cuInit", 0)
    handle = ctypes.c_int()
    call("cuDeviceGet", ctypes.byref(handle), device)
    major, minor = ctypes.c_int(), ctypes.c_int()
    for value, attribute in (
        (major, _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
        (minor, _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
    ):
        call("cuDeviceGetAttribute", ctypes.byref(value), attribute, handle)
    return f"{major.value}.{minor.value}"


def _tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineError(
            "TensorRT's Python bindings are not installed: build engines in the "
            "engine-builder image (docker/predictor.Dockerfile)"
        ) from exc
    if tensorrt_release(tensorrt.__version__) != tensorrt_release(TENSORRT_VERSION):
        raise EngineError(
            f"TensorRT {tensorrt.__version__} here, but {TRITON_IMAGE} runs "
            f"{TENSORRT_VERSION}: it could not load these engines"
        )
    return tensorrt


def _check_network(network: Any, spec: ModelSpec, trt: ModuleType) -> None:
    """Fail with the spec's words before TensorRT fails with its own, much later."""
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise EngineError(f"{spec.name}: expected one input and one output")
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    if tensor.name != spec.input_name or tensor.dtype != trt.uint8:
        raise EngineError(f"{spec.name}: input must be uint8 {spec.input_name!r}")
    if shape[0] != -1 or shape[1:] != spec.input_dims:
        raise EngineError(f"{spec.name}: input shape {shape}, expected (-1, *{spec.input_dims})")
    if network.get_output(0).name != spec.output_name:
        raise EngineError(f"{spec.name}: output must be {spec.output_name!r}")


def build_engine(onnx_path: Path, spec: ModelSpec, workspace_bytes: int = WORKSPACE_BYTES) -> bytes:
    """Serialise an FP16 TensorRT plan of ``onnx_path`` with :func:`profile_shapes`.

    Written against the TensorRT 10 Python API (``Builder``, ``OnnxParser``,
    ``create_optimization_profile``, ``build_serialized_network``). Input and output keep
    their ONNX types (uint8 in, float32 out); FP16 is allowed for the layers in between.
    """
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch; the old flag is deprecated.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    _check_network(network, spec, trt)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.set_flag(trt.BuilderFlag.FP16)
    shapes = profile_shapes(spec)
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"{spec.name}: TensorRT could not build an engine (its log says why)")
    return bytes(plan)


def configured_engines(config_text: str) -> tuple[dict[str, str], str]:
    """``cc_model_filenames`` and ``default_model_filename`` of a ``config.pbtxt`` written
    by ``predictor.configs.render``, read as text so this module stays free of protobuf."""
    default = _DEFAULT_FILENAME.search(config_text)
    return (
        dict(_CC_ENTRY.findall(config_text)),
        default[1] if default else TRITON_DEFAULT_MODEL_FILENAME,
    )


def plan_repository(
    repository: Path,
    cc: str,
    specs: Sequence[ModelSpec] = SPECS,
    tensorrt_version: str = TENSORRT_VERSION,
) -> list[EngineJob]:
    """The engines a GPU of compute capability ``cc`` needs in a GPU-profile repository.

    Builds only what Triton would load there: each model's ``config.pbtxt`` must select
    exactly the engine this builder makes for ``cc`` and this TensorRT version.
    """
    expected = engine_filename(cc, tensorrt_version)
    jobs = []
    for spec in specs:
        model_dir = repository / spec.name
        config = model_dir / "config.pbtxt"
        version_dir = model_dir / str(spec.version)
        onnx = version_dir / ONNX_FILENAME
        if not config.is_file() or not onnx.is_file():
            raise EngineError(
                f"{model_dir} lacks config.pbtxt or {spec.version}/{ONNX_FILENAME}: copy in "
                "the output of `python -m predictor build-repository --profile gpu`"
            )
        filenames, default = configured_engines(config.read_text())
        selected = select_engine(filenames, cc, default)
        if selected != expected:
            raise EngineError(
                f"{config}: Triton would load {selected!r} on this GPU, but this builder makes "
                f"{expected!r}: regenerate the repository for compute capability "
                f"{compute_capability(cc)} and TensorRT {tensorrt_release(tensorrt_version)}"
            )
        jobs.append(EngineJob(spec, onnx, version_dir / expected))
    return jobs


def write_atomically(path: Path, data: bytes) -> None:
    """A replica starting while the Job runs must never load half an engine."""
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        # Triton may run under another uid than the Job; engines are not secret.
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def build_repository(
    jobs: Iterable[EngineJob],
    build: Callable[[Path, ModelSpec], bytes] = build_engine,
    force: bool = False,
) -> list[Path]:
    """Build each missing engine (all of them with ``force``); returns the files written.

    Existing engines are kept, so re-running the Job after an upgrade is cheap, and engines
    of other TensorRT versions stay for a rollback.
    """
    written = []
    for job in jobs:
        if job.engine.exists() and not force:
            print(f"{job.spec.name}: {job.engine.name} exists, kept", flush=True)
            continue
        print(f"{job.spec.name}: building {job.engine.name} from {job.onnx}", flush=True)
        write_atomically(job.engine, build(job.onnx, job.spec))
        written.append(job.engine)
    return written


def _build_one(args: argparse.Namespace) -> None:
    spec = next(s for s in SPECS if s.name == args.model)
    out = args.out
    if out.is_dir():
        out = out / engine_filename(device_compute_capability())
    write_atomically(out, build_engine(args.onnx, spec, args.workspace_mib << 20))
    print(f"wrote {out}")


def _build_repository(args: argparse.Namespace) -> None:
    expected = compute_capability(args.compute_capability) if args.compute_capability else None
    if args.dry_run:
        if expected is None:
            raise EngineError("--dry-run needs --compute-capability")
        for job in plan_repository(args.repository, expected):
            print(f"{job.spec.name}: {job.onnx} -> {job.engine}")
        return
    cc = device_compute_capability()
    if expected is not None and cc != expected:
        raise EngineError(
            f"this node's GPU has compute capability {cc}, the Job expected {expected}: "
            "check the Job's nodeSelector"
        )
    build = functools.partial(build_engine, workspace_bytes=args.workspace_mib << 20)
    build_repository(plan_repository(args.repository, cc), build=build, force=args.force)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m predictor.engines", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("build", help="build one engine on this node's GPU")
    one.set_defaults(run=_build_one)
    one.add_argument("--onnx", type=Path, required=True)
    one.add_argument("--model", required=True, choices=[spec.name for spec in SPECS])
    one.add_argument(
        "--out", type=Path, required=True, help="engine file, or a directory to name it in"
    )
    repo = commands.add_parser(
        "build-repository", help="build this GPU's engines into a GPU-profile model repository"
    )
    repo.set_defaults(run=_build_repository)
    repo.add_argument("--repository", type=Path, required=True)
    repo.add_argument(
        "--compute-capability",
        help="the GPU this Job must run on (default: this node's); with --dry-run, the one to plan",
    )
    repo.add_argument("--force", action="store_true", help="rebuild engines that exist")
    repo.add_argument(
        "--dry-run", action="store_true", help="print the plan; needs no GPU or TensorRT"
    )
    for command in (one, repo):
        command.add_argument("--workspace-mib", type=int, default=WORKSPACE_BYTES >> 20)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
