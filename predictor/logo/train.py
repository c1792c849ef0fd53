"""Train the logo detector deterministically, with a checkpoint after every epoch.

Recipe after gogologo: batch 64, Adam, categorical cross-entropy over
``(out_of_domain, logo)``, classes weighted by inverse frequency (there are more logos than
photo crops); the epoch with the lowest validation loss is kept.

On CPU the backbone stays frozen and the head trains on cached features (``features``),
drawing one of each item's views per epoch. With a GPU, ``finetune`` then trains the top of
the backbone too, on images augmented per step.

    python -m predictor.logo.train --out build/logo [--resume]
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import typer
from torch import nn
from tqdm import tqdm

from predictor.logo import LABELS, features, metrics
from predictor.logo.data import SEED
from predictor.logo.export import THREADS
from predictor.logo.fetch import Package, fetch_all
from predictor.logo.model import LogoDetector

BATCH = 64
EPOCHS = 30
LEARNING_RATE = 1e-3
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "detector.pt"
SCORES = "scores.npz"


def seed_everything(seed: int = SEED) -> None:
    # cuBLAS is only deterministic with a fixed workspace; set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(THREADS)


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    per_class = torch.bincount(labels, minlength=len(LABELS)).float()
    return per_class.sum() / (len(LABELS) * per_class)


def fit(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    train_epoch: Callable[[], None],
    val_loss: Callable[[], float],
    *,
    epochs: int,
    checkpoint: Path,
    fingerprint: str,
    resume: bool = False,
    desc: str = "train",
) -> dict:
    """Run ``epochs`` epochs, keep the lowest-``val_loss`` weights in ``model``, return the history.

    Every epoch starts from ``torch.manual_seed(SEED + epoch)``, so an epoch depends only on
    the weights and optimiser state it starts from: resuming from the checkpoint saved
    after each epoch replays exactly what the uninterrupted run would have done.
    ``fingerprint`` names the data and recipe; a checkpoint of another one is refused.
    """
    progress = {"epoch": 0, "best_loss": float("inf"), "best_epoch": -1, "history": [],
                "best": copy.deepcopy(model.state_dict())}
    if resume and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved["fingerprint"] != fingerprint:
            raise ValueError(f"{checkpoint} is from another data set or recipe: delete it or drop --resume")
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        progress = saved["progress"]
    with tqdm(total=epochs, initial=progress["epoch"], desc=desc, unit="epoch") as bar:
        for epoch in range(progress["epoch"], epochs):
            torch.manual_seed(SEED + epoch)
            model.train()
            train_epoch()
            model.eval()
            with torch.no_grad():
                loss = val_loss()
            progress["history"].append(round(loss, 5))
            if loss < progress["best_loss"]:
                progress.update(best_loss=loss, best_epoch=epoch, best=copy.deepcopy(model.state_dict()))
            progress["epoch"] = epoch + 1
            _save_atomically({"fingerprint": fingerprint, "model": model.state_dict(),
                              "optimiser": optimiser.state_dict(), "progress": progress}, checkpoint)
            bar.update()
            bar.set_postfix(val_loss=f"{loss:.4f}")
    model.load_state_dict(progress["best"])
    return {"best_epoch": progress["best_epoch"], "val_loss_per_epoch": progress["history"]}


def _save_atomically(state: dict, path: Path) -> None:
    """An interrupted save must not destroy the previous epoch's checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    torch.save(state, staging)
    staging.replace(path)


def train_head(dataset: features.Dataset, head: nn.Module, *, checkpoint: Path, resume: bool = False,
               epochs: int = EPOCHS, lr: float = LEARNING_RATE) -> dict:
    """Fit ``head`` on the cached features: each epoch sees one random view of every training item."""
    seed_everything()
    # Initial weights from SEED, not from whatever drew random numbers before.
    for layer in head.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    train = dataset.splits == "train"
    # [N, 1 + AUG_VIEWS, 1280]: view 0 is the clean one.
    pool = torch.from_numpy(np.concatenate([dataset.features[train][:, None], dataset.views], axis=1))
    y_train = torch.from_numpy(dataset.labels[train])
    x_val, y_val = (torch.from_numpy(a) for a in dataset.split("val"))
    weights = class_weights(y_train)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    optimiser = torch.optim.Adam(head.parameters(), lr=lr)

    def train_epoch() -> None:
        views = torch.randint(pool.shape[1], (len(pool),))
        for idx in torch.randperm(len(pool)).split(BATCH):
            optimiser.zero_grad()
            loss_fn(head(pool[idx, views[idx]]), y_train[idx]).backward()
            optimiser.step()

    fingerprint = f"head:{dataset.data_digest}:{lr}:{BATCH}"
    history = fit(head, optimiser, train_epoch, lambda: float(loss_fn(head(x_val), y_val)),
                  epochs=epochs, checkpoint=checkpoint, fingerprint=fingerprint, resume=resume)
    return {**history, "class_weights": [round(w, 5) for w in weights.tolist()]}


def head_scores(head: nn.Module, x: np.ndarray) -> np.ndarray:
    """P(logo) from cached features, as the exported graph's softmax computes it."""
    head.eval()
    with torch.no_grad():
        return torch.softmax(head(torch.from_numpy(x)), dim=1)[:, LABELS.index("logo")].numpy()


def counts(dataset: features.Dataset) -> dict:
    """Items and distinct sources (brands, photographs, synthetic images) per split and class."""
    result = {}
    for split in ("train", "val", "test"):
        for label, name in enumerate(LABELS):
            mask = (dataset.splits == split) & (dataset.labels == label)
            result.setdefault(split, {})[name] = {
                "items": int(mask.sum()), "sources": len(np.unique(dataset.groups[mask]))}
    return result


def run(out: Path, packages: dict[str, Package], *, resume: bool = False, epochs: int = EPOCHS,
        lr: float = LEARNING_RATE) -> dict:
    """Build (or load) the features, train, evaluate; write the weights, scores and metrics."""
    started = time.perf_counter()
    dataset = features.load_or_build(out, packages)
    features_s = time.perf_counter() - started
    started = time.perf_counter()
    detector = LogoDetector()
    history = train_head(dataset, detector.head, checkpoint=out / CHECKPOINT, resume=resume,
                         epochs=epochs, lr=lr)
    scores = {split: head_scores(detector.head, dataset.split(split)[0]) for split in ("val", "test")}
    recipe = {"epochs": epochs, "batch": BATCH, "learning_rate": lr, "seed": SEED,
              "augmented_views": features.AUG_VIEWS, "backbone": "frozen", **history}
    if torch.cuda.is_available():
        from predictor.logo import finetune  # the GPU phase; never runs on the CPU build

        scores, recipe["finetune"] = finetune.run(out, packages, dataset, detector, resume=resume)
    training_s = time.perf_counter() - started
    torch.save(detector.state_dict(), out / WEIGHTS)
    # The training framework's own scores, for the evaluation to compare the export against.
    np.savez(out / SCORES, **{key: value for split in ("val", "test") for key, value in (
        (f"{split}_ids", dataset.ids[dataset.splits == split]), (split, scores[split]))})
    result = {
        "labels": list(LABELS),
        "validation": metrics.summary(scores["val"], dataset.split("val")[1]),
        "test": metrics.summary(scores["test"], dataset.split("test")[1]),
        "counts": counts(dataset),
        "training": recipe,
        "seconds": {"data_and_features": round(features_s, 1), "training": round(training_s, 1)},
        "data_digest": dataset.data_digest,
    }
    write_metrics(out, result)
    return result


def write_metrics(out: Path, result: dict) -> None:
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")


def main(
    out: Path = typer.Option(Path("build/logo"), help="Where features, manifest, weights and metrics go."),
    downloads: Path = typer.Option(Path("build"), help="Where the npm/, deb/ and pypi/ sources go."),
    resume: bool = typer.Option(False, help=f"Continue from {CHECKPOINT} in --out."),
    epochs: int = EPOCHS,
    lr: float = LEARNING_RATE,
) -> None:
    result = run(out, fetch_all(downloads), resume=resume, epochs=epochs, lr=lr)
    print(json.dumps({k: result[k] for k in ("validation", "test", "counts", "seconds")}, indent=2))


if __name__ == "__main__":
    typer.run(main)
