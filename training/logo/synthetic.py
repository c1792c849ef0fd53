"""Synthetic stand-ins for the non-photo half of random Commons files: pages, charts, maps.

Logos are flat graphics; without these hard negatives the model could learn "flat graphic
means logo" from photos alone. Maps matter most: before they were added, the model scored
88 of 100 synthetic maps as logos (flat fills, crisp outlines, a few words), while text
pages and charts were already rejected. All are drawn with numpy, Pillow and its built-in
font, so they need no package beyond the ones the service already has.
"""

from __future__ import annotations

import string

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.logo.imaging import encode, log_uniform, random_colour

KINDS = ("document", "chart", "map")


def render_synthetic(kind: str, rng: np.random.Generator) -> tuple[bytes, dict]:
    img = _DRAW[kind](rng)
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


def _map(rng: np.random.Generator) -> Image.Image:
    """A political or locator map: land and sea, regions with borders, rivers, roads, names."""
    width = round(log_uniform(rng, 400, 1300))
    size = (width, round(width * rng.uniform(0.7, 1.3)))
    field = (_smooth_noise(rng, size, int(rng.integers(4, 12)))
             + 0.15 * _smooth_noise(rng, size, int(rng.integers(16, 40))))
    land = field > np.quantile(field, rng.uniform(0.15, 0.6))
    region = _regions(rng, size, int(rng.integers(3, 30)), wobble=field)
    regions = int(region.max()) + 1
    if rng.random() < 0.5:  # political: a pastel colour per region
        palette = np.array([random_colour(rng, lightness=(0.75, 0.92)) for _ in range(regions)], np.float32)
    else:  # locator: one land colour, one region highlighted
        palette = np.tile(np.array(random_colour(rng, lightness=(0.8, 0.95)), np.float32), (regions, 1))
        palette[int(rng.integers(regions))] = (200, 40, 40)
    sea = np.array([rng.integers(150, 200), rng.integers(190, 226), rng.integers(225, 251)], np.float32)
    rgb = np.where(land[..., None], palette[region], sea)
    rgb[_edges(region) & land] = (110, 110, 110)
    rgb[_edges(land)] = (70, 100, 140)
    img = Image.fromarray(rgb.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 6))):  # rivers and roads: smooth random walks
        heading = np.cumsum(rng.normal(0, 0.3, int(rng.integers(5, 20)))) + rng.uniform(0, 2 * np.pi)
        steps = np.stack([np.cos(heading), np.sin(heading)], 1) * width / 30
        points = np.cumsum(steps, 0) + rng.random(2) * size
        river = rng.random() < 0.5
        draw.line([tuple(p) for p in points], fill=(60, 110, 200) if river else (200, 60, 40),
                  width=int(rng.integers(1, 4)))
    font = ImageFont.load_default(max(8, round(width / rng.uniform(40, 80))))
    for _ in range(int(rng.integers(0, 12))):
        draw.text(tuple(rng.random(2) * size), _words(rng, 1).capitalize(), fill=(30, 30, 30), font=font)
    return img


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upscaled bicubically to ``size``."""
    coarse = rng.random((max(2, round(cells * size[1] / size[0])), cells))
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255


def _regions(rng: np.random.Generator, size: tuple[int, int], count: int, wobble: np.ndarray) -> np.ndarray:
    """Voronoi cells of ``count`` random points, their borders bent by ``wobble``.

    Computed on a quarter-resolution grid: the upscale is cheap and the stair steps look
    like the borders of a rasterised map.
    """
    points = rng.random((count, 2)) * size
    step = 4
    bend = wobble[::step, ::step] * size[0] * 0.15
    yy, xx = np.mgrid[0 : size[1] : step, 0 : size[0] : step]
    x, y = (xx + bend)[..., None], (yy - bend)[..., None]
    distance = (x - points[:, 0]) ** 2 + (y - points[:, 1]) ** 2
    cells = Image.fromarray(distance.argmin(-1).astype(np.uint8))
    return np.asarray(cells.resize(size, Image.Resampling.NEAREST))


def _edges(labels: np.ndarray) -> np.ndarray:
    """Pixels whose upper or left neighbour has another label: one-pixel outlines."""
    edges = np.zeros(labels.shape, dtype=bool)
    edges[1:] |= labels[1:] != labels[:-1]
    edges[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    return edges


_DRAW = {"document": _document, "chart": _chart, "map": _map}
