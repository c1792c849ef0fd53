"""Deterministic test images in every shape the decoder must handle.

Content is smooth random colour fields with drawn shapes and skin-like tones, so both
models give scores away from 0 and 1 and a preprocessing slip shows up as a score change.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like RGB image: an upsampled colour field plus a few shapes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    coarse[..., 0] = np.maximum(coarse[..., 0], 150)  # warm, skin-like bias
    base = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 12, size=(height, width, 3))
    pixels = np.clip(np.asarray(base, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(1, width // 2 + 2)), y0 + int(rng.integers(1, height // 2 + 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    return img


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


# (width, height, format): sizes from thumbnail to 12 MP, both orientations.
PLAIN_CASES: list[tuple[int, int, str]] = [
    (64, 48, "JPEG"), (120, 300, "PNG"), (224, 224, "JPEG"), (256, 256, "PNG"),
    (300, 200, "JPEG"), (333, 517, "PNG"), (500, 375, "JPEG"), (640, 480, "PNG"),
    (800, 600, "JPEG"), (731, 1024, "JPEG"), (1024, 768, "PNG"), (1200, 300, "JPEG"),
    (1280, 720, "JPEG"), (1500, 1000, "PNG"), (1600, 1200, "JPEG"), (1920, 1080, "JPEG"),
    (2048, 1536, "PNG"), (2500, 1700, "JPEG"), (3000, 2000, "JPEG"), (4000, 3000, "JPEG"),
    (97, 1301, "PNG"), (2400, 2400, "JPEG"),
]


def plain_files() -> list[tuple[str, bytes]]:
    """At least 20 plain RGB JPEG and PNG files of varied sizes."""
    files = []
    for seed, (width, height, fmt) in enumerate(PLAIN_CASES):
        name = f"Plain_{seed:02d}_{width}x{height}.{'jpg' if fmt == 'JPEG' else 'png'}"
        options = {"quality": 90} if fmt == "JPEG" else {}
        files.append((name, encode(photo(width, height, seed), fmt, **options)))
    return files


def exif_rotated_jpeg(seed: int = 100) -> bytes:
    """Stored landscape with orientation 6: displayed portrait after rotation."""
    img = photo(640, 360, seed)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", quality=90, exif=exif.tobytes())


def special_files() -> list[tuple[str, bytes]]:
    """Modes the reference classifier does not treat like we do (alpha, EXIF) or at all."""
    base = photo(400, 300, 200)
    rgba = base.convert("RGBA")
    alpha = Image.new("L", base.size, 0)
    ImageDraw.Draw(alpha).ellipse((40, 30, 360, 270), fill=255)
    rgba.putalpha(alpha)
    palette = base.quantize(64)
    palette_transparent = palette.copy()
    palette_transparent.info["transparency"] = 0
    grey16 = Image.fromarray(
        (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    )
    return [
        ("Rgba.png", encode(rgba, "PNG")),
        ("Palette.png", encode(palette, "PNG")),
        ("Palette_transparent.png", encode(palette_transparent, "PNG", transparency=0)),
        ("Palette.gif", encode(palette, "GIF")),
        ("Grey.jpg", encode(base.convert("L"), "JPEG", quality=90)),
        ("Cmyk.jpg", encode(base.convert("CMYK"), "JPEG", quality=90)),
        ("Grey16.png", encode(grey16, "PNG")),
        ("Exif_rotated.jpg", exif_rotated_jpeg()),
        ("La.png", encode(base.convert("LA"), "PNG")),
        ("Rgb.webp", encode(base, "WEBP", quality=90)),
        ("Rgb.tiff", encode(base, "TIFF")),
    ]


def decompression_bomb(pixels_side: int = 12_000) -> bytes:
    """A ~20 KB PNG that would decode to 144 MP (1-bit, all zero)."""
    return encode(Image.new("1", (pixels_side, pixels_side)), "PNG", optimize=True)
