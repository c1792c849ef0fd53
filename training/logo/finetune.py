"""The GPU phase: fine-tune the top of the backbone with the head, on images augmented per step.

``train.run`` calls this only when ``torch.cuda.is_available()``. It is written against
torch's API and has been exercised on CPU only, with tiny inputs
(tests/test_logo_model.py); no GPU was available where it was written.

Keras' two-phase transfer recipe: the head trained on frozen features (phase one, on CPU)
is the starting point; then the last ``TOP_BLOCKS`` MBConv blocks (Lite0's stages 6 and 7)
and the 1x1 head convolution train together with the head at a lower rate. Every step
augments its batch afresh on the GPU (``augment``), as gogologo's Keras layers did.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.logo import LABELS, augment, data, features, fitting
from training.logo.fetch import Package
from training.logo.model import LogoDetector

TOP_BLOCKS = 5
EPOCHS = 10
LEARNING_RATE = 1e-4
CHECKPOINT = "checkpoint-finetune.pt"


def run(out: Path, packages: dict[str, Package], dataset: features.Dataset, detector: LogoDetector, *,
        resume: bool, device: str = "cuda") -> tuple[dict[str, np.ndarray], dict]:
    """Fine-tune ``detector`` in place on the images of ``dataset``; P(logo) of val and test."""
    ids, images = render_images(packages)
    if not np.array_equal(ids, dataset.ids):
        raise RuntimeError("the rendered items differ from the cached features: rebuild build/logo")
    labels, splits = dataset.labels, dataset.splits
    recipe = {"device": torch.cuda.get_device_name(device), "top_blocks": TOP_BLOCKS, "epochs": EPOCHS,
              "learning_rate": LEARNING_RATE, "batch": fitting.BATCH}
    history = finetune(detector, images, labels, splits, device=device, checkpoint=out / CHECKPOINT,
                       fingerprint=f"finetune:{dataset.data_digest}:{TOP_BLOCKS}:{LEARNING_RATE}:{fitting.BATCH}",
                       resume=resume)
    scores = {split: predict(detector, images[splits == split], device) for split in ("val", "test")}
    detector.cpu()
    return scores, {**recipe, **history}


def render_images(packages: dict[str, Package]) -> tuple[np.ndarray, np.ndarray]:
    """Every item's id and serving tensor, in the order and with the skips of ``features``."""
    rendered = [r for r in data.render_all(data.plan(packages)) if r.image is not None]
    return np.array([r.item.id for r in rendered]), np.stack([r.image for r in rendered])


def finetune(detector: LogoDetector, images: np.ndarray, labels: np.ndarray, splits: np.ndarray, *,
             device: str, checkpoint: Path, fingerprint: str, resume: bool = False,
             epochs: int = EPOCHS, lr: float = LEARNING_RATE) -> dict:
    """Train the top of the backbone and the head on ``device``; return the history."""
    fitting.seed_everything()
    detector.backbone.unfreeze_top(TOP_BLOCKS)
    detector.to(device)
    x_train = torch.from_numpy(images[splits == "train"]).to(device)
    y_train = torch.from_numpy(labels[splits == "train"]).to(device)
    x_val = torch.from_numpy(images[splits == "val"]).to(device)
    y_val = torch.from_numpy(labels[splits == "val"]).to(device)
    loss_fn = nn.CrossEntropyLoss(weight=fitting.class_weights(y_train.cpu()).to(device))
    optimiser = torch.optim.Adam([p for p in detector.parameters() if p.requires_grad], lr=lr)

    def train_epoch() -> None:
        # Seeded from torch's generator, which ``fit`` reseeds every epoch.
        rng = np.random.default_rng(int(torch.randint(2**62, ())))
        for idx in torch.randperm(len(x_train)).split(fitting.BATCH):
            batch = augment.augment(x_train[idx.to(device)], augment.draw([rng] * len(idx)))
            optimiser.zero_grad()
            loss_fn(detector.logits(batch), y_train[idx.to(device)]).backward()
            optimiser.step()

    def val_loss() -> float:
        logits = torch.cat([detector.logits(x) for x in x_val.split(fitting.BATCH)])
        return float(loss_fn(logits, y_val))

    return fitting.fit(detector, optimiser, train_epoch, val_loss, epochs=epochs, checkpoint=checkpoint,
                     fingerprint=fingerprint, resume=resume, desc="finetune")


def predict(detector: LogoDetector, images: np.ndarray, device: str) -> np.ndarray:
    detector.eval()
    with torch.no_grad():
        scores = [detector(x.to(device)).cpu() for x in torch.from_numpy(images).split(fitting.BATCH)]
    return torch.cat(scores)[:, LABELS.index("logo")].numpy()
