"""Generate a Triton model repository from the model specs and the exported ONNX files."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import onnx

from predictor import engines
from predictor.configs import cpu_config, gpu_config, render
from preprocessing.specs import ONNX_FILENAME, SPECS, ModelSpec

BACKEND_MODEL = Path(__file__).parent / "backend" / "model.py"


def _assemble(
    out: Path,
    onnx_files: dict[str, Path],
    specs: tuple[ModelSpec, ...],
    config_text: Callable[[ModelSpec], str],
    extra_files: tuple[Path, ...] = (),
) -> Path:
    """Write ``<name>/config.pbtxt`` and ``<name>/<version>/model.onnx`` (plus ``extra_files``).

    The tree is assembled beside ``out`` and swapped in with a rename, so a running or
    interrupted build never leaves Triton a half-written repository.
    """
    missing = [spec.name for spec in specs if spec.name not in onnx_files]
    if missing:
        raise ValueError(f"no exported ONNX model for {', '.join(missing)}")
    for spec in specs:
        _check_version(onnx_files[spec.name], spec)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    for spec in specs:
        version_dir = staging / spec.name / str(spec.version)
        version_dir.mkdir(parents=True)
        (staging / spec.name / "config.pbtxt").write_text(config_text(spec))
        for extra in extra_files:
            shutil.copyfile(extra, version_dir / extra.name)
        shutil.copyfile(onnx_files[spec.name], version_dir / ONNX_FILENAME)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def _check_version(path: Path, spec: ModelSpec) -> None:
    """Refuse a model whose metadata names another version: Triton would serve it, and the
    transformer report it, under the spec's version."""
    metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if metadata.get("model_version", str(spec.version)) != str(spec.version):
        raise ValueError(f"{path} is {spec.name} version {metadata['model_version']}, "
                         f"the spec serves version {spec.version}")


def build_cpu(out: Path, onnx_files: dict[str, Path], specs: tuple[ModelSpec, ...] = SPECS) -> Path:
    """Write the CPU profile: ``<name>/config.pbtxt`` and ``<name>/<version>/{model.py,model.onnx}``."""
    return _assemble(
        out, onnx_files, specs, lambda spec: render(cpu_config(spec)), extra_files=(BACKEND_MODEL,)
    )


def build_gpu(
    out: Path,
    onnx_files: dict[str, Path],
    specs: tuple[ModelSpec, ...] = SPECS,
    compute_capabilities: Iterable[str] = engines.COMPUTE_CAPABILITIES,
) -> Path:
    """Write the GPU profile: ``<name>/config.pbtxt`` and ``<name>/<version>/model.onnx``.

    The ONNX file is the engine builder's input; Triton loads only the engine that
    ``cc_model_filenames`` selects, which ``python -m predictor.engines build-repository``
    adds beside it on each kind of GPU node.
    """
    capabilities = tuple(compute_capabilities)
    return _assemble(out, onnx_files, specs, lambda spec: render(gpu_config(spec, capabilities)))
