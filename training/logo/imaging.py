"""Helpers shared by the logo, photo and synthetic generators: colours and encodings.

Every training image leaves its generator as encoded file bytes, exactly like an upload,
and only then enters the serving decode rule (``serving_tensor``), so training sees the
same pixels the service will.
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image

from preprocessing.decode import decode_image
from preprocessing.tensor import LOGO_MIN_SIDE, logo_tensor

Colour = tuple[int, int, int]


def svg_sets_text(svg: bytes) -> bool:
    """Whether an SVG has text elements. cairo sets them in whatever face fontconfig finds for
    the named family, with the process's font cache, so their pixels would depend on the
    machine's fonts and on what the worker rendered before: such SVGs are left out."""
    return b"<text" in svg or b"<flowRoot" in svg


def serving_tensor(data: bytes) -> np.ndarray:
    """The uint8 224x224x3 tensor the service would send to the logo model for ``data``."""
    return logo_tensor(decode_image(data, min_side=LOGO_MIN_SIDE))


def encode(img: Image.Image, rng: np.random.Generator, *, jpeg_share: float) -> tuple[bytes, dict]:
    """Encode as JPEG (random quality) with probability ``jpeg_share``, else as lossless PNG.

    RGBA images that end up as JPEG are flattened on white first, as a JPEG export would.
    """
    buf = io.BytesIO()
    if rng.random() < jpeg_share:
        quality = int(rng.integers(55, 96))
        if img.mode == "RGBA":
            img = flatten(img, (255, 255, 255))
        img.convert("RGB").save(buf, format="JPEG", quality=quality)
        return buf.getvalue(), {"format": "JPEG", "quality": quality}
    # compress_level only trades speed for size: the decoded pixels are identical.
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), {"format": "PNG", "mode": img.mode}


def flatten(img: Image.Image, background: Colour) -> Image.Image:
    canvas = Image.new("RGB", img.size, background)
    canvas.paste(img, mask=img.getchannel("A"))
    return canvas


def random_colour(rng: np.random.Generator, *, lightness: tuple[float, float] = (0.2, 0.8)) -> Colour:
    """A random colour with a controlled lightness, so callers can ask for light or dark."""
    hue, light, sat = rng.random(), rng.uniform(*lightness), rng.uniform(0.3, 1.0)
    return tuple(round(c * 255) for c in colorsys.hls_to_rgb(hue, light, sat))


def luminance(colour: Colour) -> float:
    r, g, b = colour
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255


def hex_colour(colour: Colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def parse_hex(value: str) -> Colour:
    value = value.lstrip("#")
    return tuple(int(value[i : i + 2], 16) for i in (0, 2, 4))


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))
