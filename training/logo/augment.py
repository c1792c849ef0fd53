"""gogologo's training augmentation, as Keras' preprocessing layers define it, in torch.

RandomContrast(0.11), RandomFlip("horizontal"), RandomRotation(0.16) and
RandomTranslation(0.084, 0.084), applied in that order to the uint8 224x224 model input
(what the layers see in a Keras model). Rotation and translation are one affine resample,
bilinear, with Keras' default ``fill_mode="reflect"`` (mirror about the edge of the last
pixel, which is grid_sample's ``"reflection"``). The result is rounded back to uint8, so an
augmented view is an image the service could have been sent.

Parameters are drawn per image from a numpy generator the caller seeds, so a view depends
only on its seed, never on which batch or process computes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

CONTRAST = 0.11
ROTATION = 0.16  # fraction of a full turn, either way: +-57.6 degrees
TRANSLATION = 0.084  # fraction of the side, either way, independently in x and y


@dataclass(frozen=True)
class Params:
    """One row per image."""

    contrast: np.ndarray  # float [N]: contrast factor
    flip: np.ndarray  # bool [N]: mirror left-right
    angle: np.ndarray  # float [N]: radians
    shift: np.ndarray  # float [N, 2]: (x, y) as fractions of the side


def draw(rngs: list[np.random.Generator]) -> Params:
    """One set of parameters from each generator."""
    rows = [(rng.uniform(1 - CONTRAST, 1 + CONTRAST), rng.random() < 0.5,
             rng.uniform(-ROTATION, ROTATION) * 2 * math.pi, rng.uniform(-TRANSLATION, TRANSLATION, size=2))
            for rng in rngs]
    contrast, flip, angle, shift = zip(*rows)
    return Params(np.array(contrast), np.array(flip), np.array(angle), np.stack(shift))


def augment(images: torch.Tensor, params: Params) -> torch.Tensor:
    """Augment uint8 NHWC ``images`` (on any device) with one row of ``params`` each."""
    device = images.device
    x = images.permute(0, 3, 1, 2).to(torch.float32)
    factor = torch.as_tensor(params.contrast, dtype=torch.float32, device=device).view(-1, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)  # per image and channel, as RandomContrast
    x = ((x - mean) * factor + mean).clamp(0, 255)
    flip = torch.as_tensor(params.flip, device=device)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    grid = F.affine_grid(_inverse_affine(params).to(device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _inverse_affine(params: Params) -> torch.Tensor:
    """For each output pixel, where to sample the input: ``R^-1 (p - t)`` in [-1, 1] coordinates.

    The images are square, so a rotation in normalised coordinates is a true rotation.
    """
    cos, sin = np.cos(params.angle), np.sin(params.angle)
    shift = 2 * params.shift  # the side spans 2 in normalised coordinates
    inverse = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1)  # R^-1 = R^T
    offset = -np.einsum("nij,nj->ni", inverse, shift)
    return torch.as_tensor(np.concatenate([inverse, offset[:, :, None]], 2), dtype=torch.float32)
