"""The released logo model (training/logo/release/), which `make serve` assembles instead of
building from nothing: it assembles to the very file that was released, it is of the spec's
version, and the build `make models` made from nothing reproduces it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import onnx
import pytest
import torch

from preprocessing.specs import LOGO
from training.logo import release, train
from training.logo.export import OUTPUT, export_onnx
from training.logo.model import TOP_BLOCKS, LogoDetector, weights_digest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "logo"


@pytest.fixture(scope="module")
def assembled(tmp_path_factory) -> Path:
    return release.assemble(tmp_path_factory.mktemp("release") / "model.onnx")


def test_the_release_assembles_to_the_released_file(assembled) -> None:
    manifest = release.manifest()
    assert hashlib.sha256(assembled.read_bytes()).hexdigest() == manifest["onnx_sha256"]
    metadata = {p.key: p.value for p in onnx.load(str(assembled)).metadata_props}
    assert metadata == manifest["metadata"]


def test_make_serve_serves_the_release_and_builds_nothing() -> None:
    """Every command `make serve` would run from nothing (-B): the release is assembled, the
    logo model is never trained, and the repository gets the assembled file."""
    commands = subprocess.run(["make", "--no-print-directory", "-n", "-B", "serve"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    assert "training.logo.release assemble --out build/logo-release/model.onnx" in commands
    assert "--onnx logo-detection=build/logo-release/model.onnx" in commands
    assert "training.logo.build" not in commands and "training.logo.train" not in commands


@pytest.mark.parametrize(("target", "main"), [
    ("loadtest", "-m loadtests.run"), ("soak", "-m loadtests.soak"), ("bench", "-m loadtests.bench"),
    ("gpu-bench", "-m loadtests.gpu_bench.bundle"),
])
def test_load_tests_fetch_their_images_use_the_release_and_train_nothing(target: str, main: str) -> None:
    """From nothing (-B) the load tests get their images' packages before they start
    (a fresh clone has them only after the logo build) and never train the logo model."""
    commands = subprocess.run(["make", "--no-print-directory", "-n", "-B", target], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    assert "training.logo.release assemble --out build/logo-release/model.onnx" in commands
    assert -1 < commands.find("-m loadtests.payloads") < commands.find(main)
    assert "training.logo.build" not in commands and "training.logo.train" not in commands


def test_the_release_holds_only_what_training_changed() -> None:
    """The head and the CPU build's fine-tuned top (``Backbone.unfreeze_top``), each tensor
    of the trunk different from the pretrained one; no batch-norm statistics."""
    parameters = release.load_parameters()
    detector = LogoDetector()
    detector.backbone.unfreeze_top(TOP_BLOCKS)
    trainable = {name for name, p in detector.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= set(parameters) <= trainable
    assert any(name.startswith("backbone.net._blocks.") for name in parameters)
    pretrained = detector.state_dict()
    for name, tensor in parameters.items():
        if name.startswith("backbone."):
            assert not torch.equal(tensor, pretrained[name]), name


def test_the_build_reproduces_the_release() -> None:
    """The release is a copy of what the code builds. Where the build ran on the released
    platform (the same CPU kernels, bfloat16 or not), its weights are the release's to the bit;
    elsewhere the fine-tuning takes other rounding, so its test metrics must be the release's
    within noise (11 of the 2,233 test items)."""
    if not (BUILD / train.WEIGHTS).exists():
        pytest.fail(f"missing {BUILD / train.WEIGHTS}: run `make models` first")
    manifest = release.manifest()
    built = json.loads((BUILD / "metrics.json").read_text())
    assert built["data_digest"] == manifest["metadata"]["data_digest"], (
        "the build's data are not the release's: a changed data set needs a new version and "
        "`make logo-release`; unchanged code means a registry package's files changed")
    detector = LogoDetector()
    detector.load_state_dict(torch.load(BUILD / train.WEIGHTS, weights_only=True))
    if release.platform() == manifest["platform"]:
        assert weights_digest(detector) == manifest["metadata"]["weights_digest"], (
            "the build's weights are not the release's: after changing the model, `make logo-release`")
    else:
        released = json.loads(manifest["metadata"]["test_metrics"])
        assert abs(built["test"]["accuracy"] - released["accuracy"]) <= 0.005
        assert abs(built["test"]["roc_auc"] - released["roc_auc"]) <= 0.002


def _build(out: Path, detector: LogoDetector) -> None:
    torch.save(detector.state_dict(), out / train.WEIGHTS)
    export_onnx(detector, out / "model.onnx", OUTPUT, metadata={
        "model_version": str(LOGO.version), "weights_digest": weights_digest(detector)})


def test_write_then_assemble_round_trips_and_refuses_other_weights(tmp_path) -> None:
    detector = LogoDetector()
    with torch.no_grad():
        detector.backbone.net._conv_head.weight.mul_(1.5)
    (tmp_path / "build").mkdir()
    _build(tmp_path / "build", detector)
    written = release.write(tmp_path / "build", tmp_path / "release")
    assert set(release.load_parameters(tmp_path / "release")) == {
        "head.weight", "head.bias", "backbone.net._conv_head.weight"}

    out = release.assemble(tmp_path / "served" / "model.onnx", tmp_path / "release")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == written["onnx_sha256"]

    manifest = json.loads((tmp_path / "release" / release.MANIFEST).read_text())
    manifest["metadata"]["model_version"] = str(LOGO.version - 1)
    (tmp_path / "release" / release.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(release.ReleaseError, match=f"the spec serves version {LOGO.version}"):
        release.assemble(tmp_path / "served" / "model.onnx", tmp_path / "release")
    manifest["metadata"].update(model_version=str(LOGO.version), weights_digest="0" * 64)
    (tmp_path / "release" / release.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(release.ReleaseError, match="not the release's"):
        release.assemble(tmp_path / "served" / "model.onnx", tmp_path / "release")

    other = LogoDetector()
    torch.save(other.state_dict(), tmp_path / "build" / train.WEIGHTS)
    with pytest.raises(release.ReleaseError, match="different builds"):
        release.write(tmp_path / "build", tmp_path / "release")
