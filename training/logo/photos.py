"""Random crops of the few photographs we have, varied enough to stand for many.

Crops vary in area, aspect ratio (so the letterbox bars vary as they do for logos),
output size, exposure, colour and JPEG quality; some are small images blown up with
nearest-neighbour scaling, whose flat blocks of colour read as clip art to a logo model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from preprocessing.decode import decode_image
from training.logo.imaging import encode, log_uniform

# Crops never need more; downscaling once makes each crop cheap.
_WORKING_SIDE = 2048
PIXELATED_SHARE = 0.1


def load_photo(path: Path) -> Image.Image:
    img = decode_image(path.read_bytes())
    img.thumbnail((_WORKING_SIDE, _WORKING_SIDE), Image.Resampling.LANCZOS)
    return img


def render_crop(photo: Image.Image, rng: np.random.Generator) -> tuple[bytes, dict]:
    width, height = photo.size
    area = log_uniform(rng, 0.04, 1.0) * width * height
    aspect = log_uniform(rng, 1 / 2.2, 2.2)
    crop_w = min(width, max(16, round(np.sqrt(area * aspect))))
    crop_h = min(height, max(16, round(np.sqrt(area / aspect))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    img = photo.crop((left, top, left + crop_w, top + crop_h))

    out_side = round(log_uniform(rng, 160, 1400))
    scale = out_side / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                     Image.Resampling.BILINEAR)
    params: dict = {"crop": [left, top, crop_w, crop_h], "size": out_side}
    if rng.random() < PIXELATED_SHARE:
        params["pixelated"] = round(log_uniform(rng, 16, 96))
        size = img.size
        img.thumbnail((params["pixelated"], params["pixelated"]), Image.Resampling.BILINEAR)
        img = img.resize(size, Image.Resampling.NEAREST)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
        params["mirrored"] = True
    if rng.random() < 0.15:
        img = ImageOps.grayscale(img).convert("RGB")
        params["greyscale"] = True
    if rng.random() < 0.15:
        params["brightness"] = round(rng.uniform(0.2, 0.6), 3)
        img = ImageEnhance.Brightness(img).enhance(params["brightness"])
    elif rng.random() < 0.3:
        params["contrast"] = round(rng.uniform(0.6, 1.4), 3)
        params["saturation"] = round(rng.uniform(0.5, 1.5), 3)
        img = ImageEnhance.Contrast(img).enhance(params["contrast"])
        img = ImageEnhance.Color(img).enhance(params["saturation"])
    data, encoding = encode(img, rng, jpeg_share=0.85)
    return data, {**params, **encoding}
