"""Real documentation figures as hard negatives: plots, diagrams, screenshots, clip art, maps.

The files come from Debian documentation packages (``sources.FIGURES``). Each distinct file is
one source: byte-identical copies (the same screenshot in several manuals or languages) are
kept once, and the numbered variants of one figure (``foo-1_00.png``, ``foo-1_01.png``) share a
group, so they always land in the same split. Rendering keeps the figure as it is, with the
variation an upload adds: a rescale, sometimes a crop of one panel, a JPEG or PNG encoding.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from preprocessing.decode import decode_image
from training.logo.imaging import encode, log_uniform, svg_sets_text
from training.logo.sources import FigureSet

# Figures are never rendered larger than this; bigger ones are downscaled first (cost).
_MAX_SIDE = 1600
_NUMBERED = re.compile(r"([-_.]\d+)+$")


@dataclass(frozen=True)
class Figure:
    figures: FigureSet
    path: Path
    source_file: str  # relative to the package root
    group: str  # files that must share a split


def read_figures(figures: FigureSet, root: Path, seed: int) -> Iterator[Figure]:
    """The figures of one set: filtered by name and size, deduplicated, capped with ``seed``."""
    seen: set[str] = set()
    found: list[Figure] = []
    paths = sorted({path for pattern in figures.patterns for path in root.glob(pattern)})
    for path in paths:
        relative = str(path.relative_to(root))
        if any(word in relative.lower() for word in figures.exclude) or not path.is_file():
            continue
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        if path.suffix.lower() != ".svg":
            try:
                with Image.open(path) as img:
                    if min(img.size) < figures.min_side:
                        continue
            except OSError:
                continue
        # Very complex drawings rasterise slowly; with text, 12 of 2,000 differed between two builds.
        elif len(data) > 400_000 or svg_sets_text(data):
            continue
        stem = _NUMBERED.sub("", path.stem) or path.stem
        found.append(Figure(figures, path, relative, f"{figures.package}/{path.parent.name}/{stem}"))
    if figures.cap is not None and len(found) > figures.cap:
        rng = np.random.default_rng([seed, int.from_bytes(figures.kind.encode(), "little") % 2**32])
        keep = sorted(rng.choice(len(found), size=figures.cap, replace=False))
        found = [found[i] for i in keep]
    yield from found


def render_figure(path: Path, rng: np.random.Generator) -> tuple[bytes, dict]:
    """The figure as an upload of it might look: rescaled, sometimes cropped, re-encoded."""
    if path.suffix.lower() == ".svg":
        from training.logo import logos  # cairosvg, only for the clip art

        try:
            img, size = logos.rasterise_file(path.read_bytes(), round(log_uniform(rng, 200, 1000)))
        except logos.BlankRender:
            raise
        except Exception as exc:  # cairosvg fails on a few drawings (odd units, zero-size boxes)
            raise logos.BlankRender(f"cairosvg: {type(exc).__name__}: {exc}") from None
        params: dict = {"size": size}
        if rng.random() < 0.6:
            img = _on(img, (255, 255, 255))
            params["background"] = "white"
        data, encoding = encode(img, rng, jpeg_share=0.3)
        return data, {**params, **encoding}
    img = decode_image(path.read_bytes())
    img.thumbnail((_MAX_SIDE, _MAX_SIDE), Image.Resampling.LANCZOS)
    params = {"original": list(img.size)}
    if rng.random() < 0.25 and min(img.size) >= 200:  # one panel or region of the figure
        width, height = img.size
        crop_w, crop_h = (round(side * rng.uniform(0.5, 1.0)) for side in (width, height))
        left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
        img = img.crop((left, top, left + crop_w, top + crop_h))
        params["crop"] = [left, top, crop_w, crop_h]
    scale = log_uniform(rng, 0.6, 1.4)
    size = (max(16, round(img.width * scale)), max(16, round(img.height * scale)))
    if max(size) > _MAX_SIDE:
        size = tuple(max(16, round(side * _MAX_SIDE / max(size))) for side in size)
    img = img.resize(size, Image.Resampling.BILINEAR)
    params["size"] = list(size)
    data, encoding = encode(img, rng, jpeg_share=0.4)
    return data, {**params, **encoding}


def _on(img: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    canvas = Image.new("RGB", img.size, colour)
    canvas.paste(img, mask=img.getchannel("A"))
    return canvas
