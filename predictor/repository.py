"""Generate a Triton model repository from the model specs and the exported ONNX files."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from predictor.configs import cpu_config, render
from predictor.specs import ONNX_FILENAME, SPECS, ModelSpec

BACKEND_MODEL = Path(__file__).parent / "backend" / "model.py"
MODEL_VERSION = "1"


def build_cpu(out: Path, onnx_files: dict[str, Path], specs: tuple[ModelSpec, ...] = SPECS) -> Path:
    """Write the CPU profile: ``<name>/config.pbtxt`` and ``<name>/1/{model.py,model.onnx}``.

    The tree is assembled beside ``out`` and swapped in with a rename, so a running or
    interrupted build never leaves Triton a half-written repository.
    """
    missing = [spec.name for spec in specs if spec.name not in onnx_files]
    if missing:
        raise ValueError(f"no exported ONNX model for {', '.join(missing)}")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    for spec in specs:
        version_dir = staging / spec.name / MODEL_VERSION
        version_dir.mkdir(parents=True)
        (staging / spec.name / "config.pbtxt").write_text(render(cpu_config(spec)))
        shutil.copyfile(BACKEND_MODEL, version_dir / "model.py")
        shutil.copyfile(onnx_files[spec.name], version_dir / ONNX_FILENAME)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out
