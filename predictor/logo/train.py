"""Train the logo detector's linear head on cached backbone features, deterministically.

Recipe after gogologo: batch 64, Adam, categorical cross-entropy. Classes are weighted
by inverse frequency (there are more logos than photo crops), and the epoch with the
lowest validation loss is kept.

    python -m predictor.logo.train --out build/logo
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import typer
from torch import nn
from tqdm import tqdm

from predictor.logo import LABELS, features
from predictor.logo.data import SEED
from predictor.logo.export import THREADS
from predictor.logo.fetch import Package, fetch_all
from predictor.logo.model import FEATURES

BATCH = 64
EPOCHS = 30
LEARNING_RATE = 1e-3


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(THREADS)


def train_head(dataset: features.Dataset, epochs: int = EPOCHS, lr: float = LEARNING_RATE) -> tuple[nn.Linear, dict]:
    """Fit ``Linear(1280, 2)``; return the best-validation-loss head and its history."""
    seed_everything()
    x_train, y_train = (torch.from_numpy(a) for a in dataset.split("train"))
    x_val, y_val = (torch.from_numpy(a) for a in dataset.split("val"))
    per_class = torch.bincount(y_train, minlength=len(LABELS)).float()
    weights = per_class.sum() / (len(LABELS) * per_class)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    head = nn.Linear(FEATURES, len(LABELS))
    optimiser = torch.optim.Adam(head.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(SEED)

    best, best_loss, best_epoch, history = copy.deepcopy(head.state_dict()), float("inf"), -1, []
    for epoch in (bar := tqdm(range(epochs), desc="train", unit="epoch")):
        head.train()
        for idx in torch.randperm(len(x_train), generator=shuffle).split(BATCH):
            optimiser.zero_grad()
            loss_fn(head(x_train[idx]), y_train[idx]).backward()
            optimiser.step()
        head.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(head(x_val), y_val))
        history.append(round(val_loss, 5))
        if val_loss < best_loss:
            best, best_loss, best_epoch = copy.deepcopy(head.state_dict()), val_loss, epoch
        bar.set_postfix(val_loss=f"{val_loss:.4f}")
    head.load_state_dict(best)
    return head.eval(), {"best_epoch": best_epoch, "val_loss_per_epoch": history,
                         "class_weights": weights.tolist()}


def evaluate(head: nn.Linear, x: np.ndarray, y: np.ndarray) -> dict:
    with torch.no_grad():
        logits = head(torch.from_numpy(x))
        loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(y)))
        logo = torch.softmax(logits, dim=1)[:, 1].numpy()
    return {
        "accuracy": round(float(((logo >= 0.5) == (y == 1)).mean()), 5),
        "roc_auc": round(roc_auc(logo, y), 5),
        "loss": round(loss, 5),
        "count": int(len(y)),
    }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random logo outscores a random non-logo (Mann-Whitney U, ties half)."""
    order = np.argsort(scores, kind="stable")
    _, first, tied = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (tied + 1) / 2, tied)  # average 1-based rank of each tie
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def counts(dataset: features.Dataset) -> dict:
    """Items and distinct sources (brands, photographs, synthetic images) per split and class."""
    result = {}
    for split in ("train", "val", "test"):
        for label, name in enumerate(LABELS):
            mask = (dataset.splits == split) & (dataset.labels == label)
            result.setdefault(split, {})[name] = {
                "items": int(mask.sum()), "sources": len(np.unique(dataset.groups[mask]))}
    return result


def run(out: Path, packages: dict[str, Package], epochs: int = EPOCHS, lr: float = LEARNING_RATE) -> dict:
    """Build (or load) the features, train, evaluate; write head.pt and metrics.json."""
    started = time.perf_counter()
    dataset = features.load_or_build(out, packages)
    features_s = time.perf_counter() - started
    started = time.perf_counter()
    head, history = train_head(dataset, epochs, lr)
    training_s = time.perf_counter() - started
    torch.save(head.state_dict(), out / "head.pt")
    metrics = {
        "labels": list(LABELS),
        "validation": evaluate(head, *dataset.split("val")),
        "test": evaluate(head, *dataset.split("test")),
        "counts": counts(dataset),
        "training": {"epochs": epochs, "batch": BATCH, "learning_rate": lr, "seed": SEED, **history},
        "seconds": {"data_and_features": round(features_s, 1), "training": round(training_s, 1)},
        "data_digest": dataset.digest,
    }
    write_metrics(out, metrics)
    return metrics


def write_metrics(out: Path, metrics: dict) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def main(
    out: Path = typer.Option(Path("build/logo"), help="Where features, manifest, head and metrics go."),
    downloads: Path = typer.Option(Path("build"), help="Where the npm/, deb/ and pypi/ sources go."),
    epochs: int = EPOCHS,
    lr: float = LEARNING_RATE,
) -> None:
    metrics = run(out, fetch_all(downloads), epochs, lr)
    print(json.dumps({k: metrics[k] for k in ("validation", "test", "counts", "seconds")}, indent=2))


if __name__ == "__main__":
    typer.run(main)
