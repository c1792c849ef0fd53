"""Synthetic stand-ins for the non-photo half of random Commons files: text pages and charts.

Logos are flat graphics; without these hard negatives the model could learn "flat graphic
means logo" from photos alone. Both are drawn with Pillow and its built-in font, so they
need no package beyond the ones the service already has.
"""

from __future__ import annotations

import string

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from predictor.logo.imaging import encode, log_uniform, random_colour

KINDS = ("document", "chart")


def render_synthetic(kind: str, rng: np.random.Generator) -> tuple[bytes, dict]:
    img = _document(rng) if kind == "document" else _chart(rng)
    data, params = encode(img, rng, jpeg_share=0.5)
    return data, {"size": list(img.size), **params}


def _words(rng: np.random.Generator, count: int) -> str:
    letters = np.array(list(string.ascii_lowercase))
    return " ".join("".join(rng.choice(letters, size=int(rng.integers(1, 11)))) for _ in range(count))


def _document(rng: np.random.Generator) -> Image.Image:
    """A page of paragraphs, sometimes with a title, as a scan or a text export would look."""
    long_side = round(log_uniform(rng, 500, 1100))
    size = (round(long_side / 1.414), long_side) if rng.random() < 0.75 else (long_side, round(long_side / 1.414))
    paper = tuple(int(v) for v in rng.integers(225, 256, size=3))
    img = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(img)
    ink = tuple(int(v) for v in rng.integers(0, 70, size=3))
    font_px = max(8, round(size[1] / rng.uniform(45, 90)))
    font = ImageFont.load_default(font_px)
    margin = round(size[0] * rng.uniform(0.05, 0.15))
    chars_per_line = int((size[0] - 2 * margin) / font.getlength("n"))
    y = margin
    if rng.random() < 0.5:
        draw.text((margin, y), _words(rng, int(rng.integers(2, 6))).title(), fill=ink,
                  font=ImageFont.load_default(font_px * 2))
        y += font_px * 3
    while y < size[1] - margin - font_px:
        for _ in range(int(rng.integers(3, 12))):
            line = _words(rng, chars_per_line // 6)[:chars_per_line]
            draw.text((margin, y), line, fill=ink, font=font)
            y += round(font_px * 1.4)
            if y >= size[1] - margin - font_px:
                break
        y += font_px
    if rng.random() < 0.4:  # scanner noise
        noise = rng.normal(0, rng.uniform(3, 12), size=(size[1], size[0], 1)).astype(np.float32)
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    return img


def _chart(rng: np.random.Generator) -> Image.Image:
    """A line or bar chart with axes, grid, ticks and a title."""
    width = round(log_uniform(rng, 400, 1400))
    size = (width, round(width * rng.uniform(0.5, 0.9)))
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font_px = max(8, round(size[1] / rng.uniform(25, 45)))
    font = ImageFont.load_default(font_px)
    left, top = round(size[0] * 0.12), round(size[1] * 0.12)
    right, bottom = size[0] - round(size[0] * 0.05), size[1] - round(size[1] * 0.12)
    draw.text((left, top // 4), _words(rng, int(rng.integers(2, 6))).capitalize(), fill=(0, 0, 0), font=font)
    ticks = int(rng.integers(4, 9))
    for i in range(ticks + 1):
        y = bottom - (bottom - top) * i / ticks
        if rng.random() < 0.7:
            draw.line([(left, y), (right, y)], fill=(220, 220, 220))
        draw.text((left - font_px * 2.5, y - font_px / 2), str(i * 10), fill=(60, 60, 60), font=font)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=(0, 0, 0), width=2)
    points = int(rng.integers(5, 30))
    xs = np.linspace(left + 5, right - 5, points)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 5))):
            ys = np.cumsum(rng.normal(0, 1, points))
            ys = bottom - (ys - ys.min()) / (np.ptp(ys) or 1) * (bottom - top) * rng.uniform(0.5, 0.95)
            draw.line(list(zip(xs, ys)), fill=random_colour(rng), width=int(rng.integers(1, 4)))
    else:
        bar = (right - left) / points * rng.uniform(0.4, 0.9)
        colour = random_colour(rng)
        for x, h in zip(xs, rng.uniform(0.05, 0.95, points)):
            draw.rectangle([x - bar / 2, bottom - h * (bottom - top), x + bar / 2, bottom], fill=colour)
    return img
