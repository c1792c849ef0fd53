"""Fine-tune the top of the trunk on CPU: the last MBConv block and the 1x1 head convolution
(batch norms: affine parameters only), with the head, on the cached input of that block.

This is Keras' second transfer phase, cut to what two cores afford: the head trained on
frozen pooled features (``train.train_head``) is the starting point; each step runs only
``Backbone.top`` (50 M multiply-adds per image, against ~400 M for the whole trunk) on the
cached ``[192, 7, 7]`` block inputs (``features.Dataset.blocks``), with dropout on the
pooled features. Batch-norm statistics stay frozen. Where the CPU multiplies bfloat16
natively the steps run under bfloat16 autocast, about 1.6 times as fast as float32, with
validation losses within 0.001 of float32's (see the model card); elsewhere in float32.

What is validated and kept is an exponential moving average of the weights over the steps,
not the last step's weights: a step's weights swing by several validation items from one
epoch to the next, and the average smooths that out (see the model card). The epoch whose
average has the lowest validation loss is kept, and it replaces the frozen trunk's top only
if that loss beats the frozen trunk's: the comparison is recorded either way.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from training.logo import LABELS, features, fitting
from training.logo.model import TOP_BLOCKS, LogoDetector, Top

# Six epochs' averages had their lowest validation loss after the fourth (see the model card);
# the best epoch is kept, so more would only cost time.
EPOCHS = 4
LEARNING_RATE = 2e-4
# Dropout on the pooled features in training steps (Keras' EfficientNet top dropout): with it
# the block trains at twice the learning rate to a lower validation loss (see the model card).
DROPOUT = 0.3
# Decoupled weight decay (AdamW) on everything that trains.
WEIGHT_DECAY = 0.05
# Per step: the average's time constant is 100 steps, of about 250 per epoch.
EMA_DECAY = 0.99
CHECKPOINT = "checkpoint-tune.pt"


def top_scores(top: nn.Module, blocks: np.ndarray) -> np.ndarray:
    """P(logo) from cached block inputs, as the exported graph's softmax computes it."""
    return torch.softmax(_logits(top, blocks), dim=1)[:, LABELS.index("logo")].numpy()


def _logits(top: nn.Module, blocks: np.ndarray) -> torch.Tensor:
    top.eval()
    with torch.no_grad():
        return torch.cat([top(_batch(blocks[i : i + 256])) for i in range(0, len(blocks), 256)])


def _batch(blocks: np.ndarray) -> torch.Tensor:
    # Channels-last: oneDNN's 1x1 and depthwise convolutions on it make a step 15-20 % faster.
    return torch.from_numpy(blocks.astype(np.float32)).contiguous(memory_format=torch.channels_last)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16, which AMX CPUs have too).
    Without it oneDNN emulates bfloat16 at a tenth of float32's speed."""
    # A private torch helper (torch is pinned); without it, float32 is the safe answer.
    return getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()


def tune(dataset: features.Dataset, detector: LogoDetector, *, checkpoint: Path, resume: bool = False,
         epochs: int = EPOCHS, lr: float = LEARNING_RATE, bf16: bool | None = None) -> dict:
    """Fine-tune ``detector``'s top and head in place; return the history and what was kept.

    ``bf16``: run the training steps under bfloat16 autocast; by default where the CPU has it
    natively (``native_bf16``). Weights, optimiser and validation stay float32.
    """
    bf16 = native_bf16() if bf16 is None else bf16
    precision = "bfloat16 autocast" if bf16 else "float32"
    fitting.seed_everything()
    top = Top(detector)
    detector.requires_grad_(False)
    detector.backbone.unfreeze_top(TOP_BLOCKS)
    detector.head.requires_grad_(True)
    # What trains, by module: part of the checkpoint's fingerprint and of the recipe.
    trained = sorted({name.rsplit(".", 1)[0] for name, p in detector.named_parameters() if p.requires_grad})
    is_train = dataset.splits == "train"
    blocks = dataset.blocks[is_train]
    y_train = torch.from_numpy(dataset.labels[is_train])
    val_blocks, y_val = dataset.blocks[dataset.splits == "val"], torch.from_numpy(dataset.split("val")[1])
    loss_fn = nn.CrossEntropyLoss(weight=fitting.class_weights(y_train))
    optimiser = torch.optim.AdamW([p for p in top.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=WEIGHT_DECAY)
    average = AveragedModel(top, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY))
    # fit checkpoints and keeps both: the step weights to go on training, the average to keep.
    both = nn.ModuleDict({"top": top, "average": average})

    def train_epoch() -> None:
        for idx in torch.randperm(len(blocks)).split(fitting.BATCH):
            rows = np.sort(idx.numpy())  # sorted rows read the float16 cache faster; order within a batch is moot
            optimiser.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                pooled = detector.backbone.top(_batch(blocks[rows]))
                logits = detector.head(nn.functional.dropout(pooled, DROPOUT, training=True))
            loss_fn(logits.float(), y_train[rows]).backward()
            optimiser.step()
            average.update_parameters(top)

    def val_loss(model: nn.Module) -> float:
        return float(loss_fn(_logits(model, val_blocks), y_val))

    frozen_state = copy.deepcopy(top.state_dict())
    frozen_loss = val_loss(top)
    fingerprint = (f"tune:{dataset.data_digest}:{','.join(trained)}:{lr}:{fitting.BATCH}:{DROPOUT}:"
                   f"{WEIGHT_DECAY}:{EMA_DECAY}:{precision}:{frozen_loss}")
    history = fitting.fit(both, optimiser, train_epoch, lambda: val_loss(average.module), epochs=epochs,
                          checkpoint=checkpoint, fingerprint=fingerprint, resume=resume, desc="tune")
    tuned_loss = min(history["val_loss_per_epoch"])
    kept = "tuned" if tuned_loss < frozen_loss else "frozen"
    top.load_state_dict(average.module.state_dict() if kept == "tuned" else frozen_state)
    detector.requires_grad_(False)
    return {"epochs": epochs, "learning_rate": lr, "dropout": DROPOUT, "weight_decay": WEIGHT_DECAY,
            "ema_decay": EMA_DECAY, "precision": precision, "trained": trained,
            "val_loss_frozen": round(frozen_loss, 5), **history, "kept": kept}
