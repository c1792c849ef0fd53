"""``python -m predictor``: export the NSFW model, generate the model repository."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from predictor import engines, nsfw_export, repository
from predictor.specs import LOGO, NSFW

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
    logo_onnx: Path = typer.Option(Path("build/logo/model.onnx")),
    nsfw_onnx: Path = typer.Option(Path("build/nsfw/model.onnx")),
    profile: Profile = typer.Option(
        Profile.cpu, help="cpu: Python backend on ONNX Runtime; gpu: TensorRT engines."
    ),
    compute_capability: list[str] = typer.Option(
        list(engines.COMPUTE_CAPABILITIES),
        help="gpu: GPUs to map an engine for (repeat the option).",
    ),
) -> None:
    """Generate a Triton model repository from the model specs (CPU profile by default)."""
    onnx_files = {LOGO.name: logo_onnx, NSFW.name: nsfw_onnx}
    if profile is Profile.gpu:
        built = repository.build_gpu(out, onnx_files, compute_capabilities=compute_capability)
    else:
        built = repository.build_cpu(out, onnx_files)
    typer.echo(f"wrote {built}")


if __name__ == "__main__":
    app()
