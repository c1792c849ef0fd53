"""``python -m predictor``: export the NSFW model, generate the model repository."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from predictor import engines, nsfw_export, repository
from preprocessing.specs import SPECS

app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.command("export-nsfw")
def export_nsfw(out: Path = typer.Option(Path("build/nsfw/model.onnx"))) -> None:
    """Wrap the packaged open_nsfw ONNX for the uint8 RGB wire format."""
    typer.echo(f"wrote {nsfw_export.export(out)}")


class Profile(str, Enum):
    cpu = "cpu"
    gpu = "gpu"


@app.command("build-repository")
def build_repository(
    out: Path = typer.Option(Path("model_repository")),
    onnx: list[str] = typer.Option(
        [], help="NAME=PATH: serve this ONNX file for model NAME instead of its spec's."
    ),
    profile: Profile = typer.Option(
        Profile.cpu, help="cpu: Python backend on ONNX Runtime; gpu: TensorRT engines."
    ),
    compute_capability: list[str] = typer.Option(
        list(engines.COMPUTE_CAPABILITIES),
        help="gpu: GPUs to map an engine for (repeat the option).",
    ),
) -> None:
    """Generate a Triton model repository from the model specs (CPU profile by default)."""
    onnx_files = {spec.name: Path(spec.onnx_path) for spec in SPECS}
    for override in onnx:
        name, _, path = override.partition("=")
        if name not in onnx_files or not path:
            raise typer.BadParameter(f"{override!r}: expected NAME=PATH for one of {list(onnx_files)}")
        onnx_files[name] = Path(path)
    if profile is Profile.gpu:
        built = repository.build_gpu(out, onnx_files, compute_capabilities=compute_capability)
    else:
        built = repository.build_cpu(out, onnx_files)
    typer.echo(f"wrote {built}")


if __name__ == "__main__":
    app()
