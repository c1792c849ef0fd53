"""Logo SVGs from the npm packages, and their rasterisation into upload-like files.

Each package is read by its own small reader because each lays its icons out
differently. Every logo carries a ``brand`` key: the split is made by brand, so GitHub's
logo from four packages lands in one split and cannot leak from training into test.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cairosvg.parser
import cairosvg.surface
import numpy as np
from PIL import Image

from training.logo.imaging import (
    Colour,
    encode,
    flatten,
    hex_colour,
    log_uniform,
    luminance,
    parse_hex,
    random_colour,
    svg_sets_text,
)

WHITE: Colour = (255, 255, 255)
BLACK: Colour = (0, 0, 0)
# Mean difference (0-1) between a logo's opaque pixels and its background below which it
# is as good as invisible: white "-dark" variants on white, black marks on near-black.
MIN_CONTRAST = 0.15


@dataclass(frozen=True)
class LogoSvg:
    package: str
    source_file: str  # path inside the package; "file#name" for icons bundled in JSON
    brand: str
    svg: bytes
    # Single-colour icons ship without colour (they render black): we paint them, with
    # ``colour`` (the brand colour) when the package records it.
    mono: bool = False
    colour: str | None = None
    licence: str | None = None  # where the package records a licence per icon
    title: str | None = None  # the brand's name, where the package records it (simple-icons)


class BlankRender(ValueError):
    """The SVG rendered to nothing visible (unsupported features, empty icon)."""


def read_logos(package: str, root: Path) -> Iterator[LogoSvg]:
    for logo in _READERS[package](package, root):
        if not svg_sets_text(logo.svg):  # two logos set text
            yield logo


def render_logo(logo: LogoSvg, rng: np.random.Generator) -> tuple[bytes, dict]:
    """Rasterise at a random size, paint, pad and put on a background; return file bytes."""
    fill = _pick_fill(logo, rng) if logo.mono else None
    svg = logo.svg if fill is None else _paint(logo.svg, fill)
    size = round(log_uniform(rng, 48, 768))
    img = _rasterise(svg, size)
    img = _pad(img, rng)
    background = _pick_background(rng, fill)
    # Transparency is composited on white by the service, so it is judged on white.
    if _contrast(img, background or WHITE) < MIN_CONTRAST:
        background = max((WHITE, BLACK), key=lambda colour: _contrast(img, colour))
    if background is not None:
        img = flatten(img, background)
    data, params = encode(img, rng, jpeg_share=0.35)
    params.update(
        size=size,
        fill=None if fill is None else hex_colour(fill),
        background="transparent" if background is None else hex_colour(background),
    )
    return data, params


def rasterise_file(svg: bytes, size: int) -> tuple[Image.Image, int]:
    """An SVG drawing (clip art) as RGBA with its longer side at ``size`` pixels."""
    return _rasterise(svg, size), size


def render_logo_on_photo(logo: LogoSvg, photo: Image.Image, rng: np.random.Generator) -> tuple[bytes, dict]:
    """The mark on a photograph, as on a product, a sign or a shirt: a hard positive.

    The mark covers 35-70% of the picture's shorter side (a logo that a moderator would call the
    subject), on a plain label patch half the time and always where the photograph would hide
    it, slightly rotated, JPEG-encoded.
    """
    width, height = photo.size
    area = log_uniform(rng, 0.1, 1.0) * width * height
    aspect = log_uniform(rng, 1 / 1.6, 1.6)
    crop_w = min(width, max(64, round(np.sqrt(area * aspect))))
    crop_h = min(height, max(64, round(np.sqrt(area / aspect))))
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    out_side = round(log_uniform(rng, 256, 1200))
    scale = out_side / max(crop_w, crop_h)
    canvas = photo.crop((left, top, left + crop_w, top + crop_h)).resize(
        (max(32, round(crop_w * scale)), max(32, round(crop_h * scale))), Image.Resampling.BILINEAR).convert("RGB")
    fill = _pick_fill(logo, rng) if logo.mono else None
    svg = logo.svg if fill is None else _paint(logo.svg, fill)
    share = rng.uniform(0.35, 0.7)
    mark = _rasterise(svg, max(24, round(min(canvas.size) * share)))
    params: dict = {"photo_crop": [left, top, crop_w, crop_h], "size": list(canvas.size), "share": round(share, 3),
                    "fill": None if fill is None else hex_colour(fill)}
    # Where the mark goes, decided before it is drawn: a mark the photograph would hide there
    # (dark on dark, thin lines on texture) is no longer a logo anyone could see, so such
    # marks are printed on a label.
    x = int(rng.integers(0, max(1, canvas.width - mark.width) + 1))
    y = int(rng.integers(0, max(1, canvas.height - mark.height) + 1))
    under = np.asarray(canvas.crop((x, y, x + mark.width, y + mark.height)), dtype=np.float32)
    ground = tuple(int(v) for v in under.reshape(-1, 3).mean(0))
    busy = float(under.std(axis=(0, 1)).mean()) > 40
    if rng.random() < 0.5 or busy or _contrast(mark, ground) < 0.4:  # on a plain label, sign or box
        pad = round(max(mark.size) * rng.uniform(0.1, 0.3))
        label = Image.new("RGBA", (mark.width + 2 * pad, mark.height + 2 * pad),
                          (*random_colour(rng, lightness=(0.1, 0.95)), 255))
        if _contrast(mark, label.getpixel((0, 0))[:3]) < MIN_CONTRAST:
            label = Image.new("RGBA", label.size, (*max((WHITE, BLACK), key=lambda c: _contrast(mark, c)), 255))
        label.alpha_composite(mark, (pad, pad))
        mark = label
        params["label"] = True
    angle = float(rng.uniform(-15, 15))
    mark = mark.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    if mark.width > canvas.width or mark.height > canvas.height:
        mark.thumbnail(canvas.size)
    x, y = min(x, canvas.width - mark.width), min(y, canvas.height - mark.height)
    alpha = mark.getchannel("A").point(lambda a: round(a * rng.uniform(0.85, 1.0)) if a else 0)
    canvas.paste(mark.convert("RGB"), (x, y), alpha)
    params.update(angle=round(angle, 2), position=[x, y])
    data, encoding = encode(canvas, rng, jpeg_share=0.85)
    return data, {**params, **encoding}


def render_logo_lowres(logo: LogoSvg, rng: np.random.Generator) -> tuple[bytes, dict]:
    """A small or badly compressed copy: rendered at 16-64 px, often upscaled, often low-quality JPEG."""
    fill = _pick_fill(logo, rng) if logo.mono else None
    svg = logo.svg if fill is None else _paint(logo.svg, fill)
    size = round(log_uniform(rng, 16, 64))
    img = _pad(_rasterise(svg, size), rng)
    background = _pick_background(rng, fill) or WHITE
    if _contrast(img, background) < MIN_CONTRAST:
        background = max((WHITE, BLACK), key=lambda colour: _contrast(img, colour))
    img = flatten(img, background)
    params: dict = {"size": size, "background": hex_colour(background),
                    "fill": None if fill is None else hex_colour(fill)}
    if rng.random() < 0.6:  # an upscaled thumbnail: blocky or blurry
        factor = rng.uniform(2, 8)
        resample = Image.Resampling.NEAREST if rng.random() < 0.4 else Image.Resampling.BILINEAR
        img = img.resize((round(img.width * factor), round(img.height * factor)), resample)
        params["upscaled"] = [round(factor, 2), resample.name]
    buf = io.BytesIO()
    quality = int(rng.integers(10, 50))
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), {**params, "format": "JPEG", "quality": quality}


def _rasterise(svg: bytes, size: int) -> Image.Image:
    """Render with the longer side at ``size`` pixels, keeping the aspect ratio."""
    tree = cairosvg.parser.Tree(bytestring=svg)
    fit = {"output_width": size}
    if _Measure.height(tree, size) > size * 1.02:  # taller than wide: fit the height instead
        fit = {"output_height": size}
    rgba = _draw(tree, **fit)
    if rgba[..., 3].max() == 0:
        raise BlankRender("nothing visible")
    return Image.fromarray(rgba, "RGBA")


class _Measure(cairosvg.surface.PNGSurface):
    """Stops once cairosvg has sized the (blank) surface, before it draws: the drawing's size
    without drawing it (a tall drawing was drawn twice, once only to learn its height: an
    eighth of the SVG time). Sizing only reads the tree; drawing changes it, so a parsed tree
    is drawn once."""

    class Size(Exception):
        pass

    def _create_surface(self, width: float, height: float):
        _, _, rounded_height = super()._create_surface(width, height)  # cairosvg's own rounding
        raise self.Size(rounded_height)

    @classmethod
    def height(cls, tree: cairosvg.parser.Tree, width: int) -> int:
        try:
            cls(tree, None, 96, output_width=width)
        except cls.Size as size:
            return size.args[0]
        raise AssertionError("cairosvg drew without creating a surface")


def _draw(tree: cairosvg.parser.Tree, **size: int) -> np.ndarray:
    """cairosvg's drawing as straight-alpha RGBA, read from cairo's pixels.

    The same pixels ``cairosvg.svg2png`` would give, without its PNG encode and decode,
    which took a fifth of the rendering time: the un-premultiplying rounds as cairo's PNG
    writer does (``(c * 255 + a / 2) / a`` in integers).
    """
    drawing = cairosvg.surface.PNGSurface(tree, None, 96, **size)
    surface = drawing.cairo
    surface.flush()
    height, width = surface.get_height(), surface.get_width()
    # ARGB32: one native-endian 32-bit word per pixel, alpha in the top byte; as
    # little-endian bytes that is B, G, R, A.
    words = np.frombuffer(surface.get_data(), np.uint32).reshape(height, -1)[:, :width]
    # The fancy index copies: finish() frees cairo's buffer, and rgba is written below.
    rgba = words.astype("<u4", copy=False).view(np.uint8).reshape(height, width, 4)[..., [2, 1, 0, 3]]
    drawing.finish()
    # Opaque pixels are already straight; transparent ones are written as zeros, as cairo
    # does; only the edges in between need dividing.
    rgba[rgba[..., 3] == 0] = 0
    partial = (rgba[..., 3] > 0) & (rgba[..., 3] < 255)
    pixels = rgba[partial].astype(np.uint16)
    alpha = pixels[:, 3:]
    rgba[partial, :3] = (pixels[:, :3] * 255 + alpha // 2) // alpha
    return rgba


def _contrast(img: Image.Image, background: Colour) -> float:
    rgba = np.asarray(img, dtype=np.float32)
    opaque = rgba[..., 3] > 127
    if not opaque.any():
        return 0.0
    return float(np.abs(rgba[opaque, :3] - background).max(axis=1).mean() / 255)


def _pick_fill(logo: LogoSvg, rng: np.random.Generator) -> Colour:
    roll = rng.random()
    if roll < 0.55:
        return parse_hex(logo.colour) if logo.colour else random_colour(rng)
    if roll < 0.85:
        return BLACK
    return WHITE


def _paint(svg: bytes, fill: Colour) -> bytes:
    colour = hex_colour(fill).encode()
    # simple-icons have no fill at all (inherits from the root); Font Awesome uses currentColor.
    return svg.replace(b"currentColor", colour).replace(b"<svg ", b'<svg fill="' + colour + b'" ', 1)


def _pad(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.3:
        return img  # tightly cropped, as many uploads are
    side = max(img.size)
    left, top, right, bottom = (round(side * f) for f in rng.uniform(0, 0.25, size=4))
    canvas = Image.new("RGBA", (img.width + left + right, img.height + top + bottom), (0, 0, 0, 0))
    canvas.paste(img, (left, top))
    return canvas


def _pick_background(rng: np.random.Generator, fill: Colour | None) -> Colour | None:
    """None keeps transparency; a light fill is never put on a light background."""
    roll = rng.random()
    light_fill = fill is not None and luminance(fill) > 0.8
    if roll < 0.45:
        return random_colour(rng, lightness=(0.05, 0.35)) if light_fill else None
    if roll < 0.65:
        return BLACK if light_fill else WHITE
    if roll < 0.75:
        return random_colour(rng, lightness=(0.05, 0.3) if light_fill else (0.88, 0.97))
    if roll < 0.9:
        return random_colour(rng, lightness=(0.1, 0.4) if light_fill else (0.3, 0.7))
    return random_colour(rng, lightness=(0.02, 0.15))


# --- package readers -------------------------------------------------------------------

_VARIANT = re.compile(r"(^(square|circle)-)|(-(icon|original|plain|wordmark|line|alt|square|logo|color))+$")


def _brand(name: str) -> str:
    """A brand key shared across packages: 'github-original-wordmark' -> 'github'."""
    return re.sub(r"[^a-z0-9]", "", _VARIANT.sub("", name.lower())) or name.lower()


def _svg_files(package: str, root: Path, pattern: str, **extra) -> Iterator[LogoSvg]:
    for path in sorted(root.glob(pattern)):
        yield LogoSvg(package, str(path.relative_to(root)), _brand(path.stem), path.read_bytes(), **extra)


def _simple_icons(package: str, root: Path) -> Iterator[LogoSvg]:
    for icon in json.loads((root / "data" / "simple-icons.json").read_text()):
        path = root / "icons" / f"{icon['slug']}.svg"
        yield LogoSvg(
            package,
            str(path.relative_to(root)),
            _brand(icon["slug"]),
            path.read_bytes(),
            mono=True,
            colour=icon["hex"],
            licence=icon.get("license", {}).get("type"),
            title=icon["title"],
        )


def _iconify(package: str, root: Path) -> Iterator[LogoSvg]:
    data = json.loads((root / "icons.json").read_text())
    for name in sorted(data["icons"]):
        icon = data["icons"][name]
        if icon.get("hidden"):  # kept by Iconify only for backwards compatibility
            continue
        box = (icon.get("left", 0), icon.get("top", 0),
               icon.get("width", data["width"]), icon.get("height", data["height"]))
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{" ".join(map(str, box))}">{icon["body"]}</svg>'
        )
        yield LogoSvg(package, f"icons.json#{name}", _brand(name), svg.encode())


def _devicon(package: str, root: Path) -> Iterator[LogoSvg]:
    """The coloured 'original' mark (else 'plain') and wordmark of each technology."""
    for folder in sorted(p for p in (root / "icons").iterdir() if p.is_dir()):
        for kind in ("", "-wordmark"):
            for style in ("original", "plain"):
                path = folder / f"{folder.name}-{style}{kind}.svg"
                if path.exists():
                    yield LogoSvg(package, str(path.relative_to(root)), _brand(folder.name), path.read_bytes())
                    break


def _flags(package: str, root: Path) -> Iterator[LogoSvg]:
    for path in sorted((root / "flags" / "4x3").glob("*.svg")):
        yield LogoSvg(package, str(path.relative_to(root)), f"flag-{path.stem}", path.read_bytes())


_READERS: dict[str, Callable[[str, Path], Iterator[LogoSvg]]] = {
    "simple-icons": _simple_icons,
    "@iconify-json/logos": _iconify,
    # Font Awesome's package licence covers fonts and code too; its SVG icons are CC BY 4.0.
    "@fortawesome/fontawesome-free": lambda p, r: _svg_files(p, r, "svgs/brands/*.svg", mono=True,
                                                             licence="CC-BY-4.0"),
    "devicon": _devicon,
    "super-tiny-icons": lambda p, r: _svg_files(p, r, "images/svg/*.svg"),
    "cryptocurrency-icons": lambda p, r: _svg_files(p, r, "svg/color/*.svg"),
    "flag-icons": _flags,
}
