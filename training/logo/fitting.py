"""The training loop shared by every stage of the logo detector: seeding, class weights,
epochs with a checkpoint after each, the best epoch kept.

The head (``train``), the CPU fine-tuning of the trunk's top (``tune``) and the GPU
fine-tuning (``finetune``) all fit through here, so they resume and replay alike.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.logo import LABELS
from training.logo.data import SEED
from training.logo.export import THREADS

BATCH = 64


def seed_everything(seed: int = SEED) -> None:
    # cuBLAS is only deterministic with a fixed workspace; set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also fills every new tensor with NaN, to expose reads of memory never
    # written: no kernel here reads any (the weights come out bit for bit the same without the
    # fill), and it cost a sixth of each fine-tuning step.
    torch.utils.deterministic.fill_uninitialized_memory = False
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
        if saved["progress"]["epoch"] > epochs:
            # Only the longer run's best weights are kept, perhaps from an epoch past ``epochs``.
            raise ValueError(f"{checkpoint} ran {saved['progress']['epoch']} epochs, more than {epochs}: "
                             "delete it or drop --resume")
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
