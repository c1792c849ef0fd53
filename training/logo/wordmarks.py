"""Wordmarks: text-only logos (a brand's name set in a chosen face), a hard positive.

Two sources. Latin: the names of the simple-icons brands (``LogoSvg.title``), each set in
one of 40-odd faces from the Debian font packages, in the brand colour or black or white,
sometimes letter-spaced, upper-cased, on a pill or next to the brand's own mark (a
combination mark). Other scripts: made-up names of 2-3 words from the letters of eleven
scripts (Arabic, Hebrew, Devanagari, Bengali, Thai, Tamil, Georgian, Armenian, Ethiopic,
Greek, Cyrillic), set in Noto or DejaVu faces; Pillow shapes them with libraqm.

The name text is what the brand registry calls the brand; the rendering is ours (CC0);
the face's licence is recorded per item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.logo import logos
from training.logo.imaging import (
    encode,
    hex_colour,
    log_uniform,
    luminance,
    parse_hex,
    random_colour,
)

_TRUETYPE = "usr/share/fonts/truetype"
LATIN_FACES = (
    *(("fonts-dejavu-core", f"dejavu/{name}.ttf") for name in (
        "DejaVuSans-Bold", "DejaVuSans", "DejaVuSerif-Bold", "DejaVuSerif", "DejaVuSansMono-Bold")),
    *(("fonts-liberation", f"liberation/Liberation{name}.ttf") for name in (
        "Sans-Bold", "Sans-BoldItalic", "Sans-Regular", "Sans-Italic", "SansNarrow-Bold", "SansNarrow-Regular",
        "Serif-Bold", "Serif-BoldItalic", "Serif-Regular", "Serif-Italic", "Mono-Bold", "Mono-Regular")),
    *(("fonts-freefont-ttf", f"freefont/Free{name}.ttf") for name in (
        "Sans", "SansBold", "SansBoldOblique", "SansOblique", "Serif", "SerifBold", "SerifBoldItalic",
        "SerifItalic", "MonoBold")),
    *(("fonts-noto-core", f"noto/Noto{name}.ttf") for name in (
        "Sans-Bold", "Sans-Regular", "SansDisplay-Bold", "SansDisplay-Regular", "Serif-Bold", "Serif-Regular",
        "SerifDisplay-Bold", "SerifDisplay-Regular")),
)

# Script: (first and last code point of its letters, faces, raqm direction or None)
SCRIPTS: dict[str, tuple[tuple[int, int], tuple[str, ...], str | None]] = {
    "arabic": ((0x0627, 0x064A), ("noto/NotoSansArabic-Bold.ttf", "noto/NotoSansArabic-Regular.ttf",
                                   "dejavu/DejaVuSans-Bold.ttf"), "rtl"),
    "hebrew": ((0x05D0, 0x05EA), ("noto/NotoSansHebrew-Bold.ttf", "noto/NotoSerifHebrew-Bold.ttf"), "rtl"),
    "devanagari": ((0x0915, 0x0939), ("noto/NotoSansDevanagari-Bold.ttf", "noto/NotoSerifDevanagari-Bold.ttf"), None),
    "bengali": ((0x0995, 0x09B9), ("noto/NotoSansBengali-Bold.ttf", "noto/NotoSerifBengali-Bold.ttf"), None),
    "thai": ((0x0E01, 0x0E2E), ("noto/NotoSansThai-Bold.ttf", "noto/NotoSerifThai-Bold.ttf"), None),
    "tamil": ((0x0B95, 0x0BB9), ("noto/NotoSansTamil-Bold.ttf", "noto/NotoSerifTamil-Bold.ttf"), None),
    "georgian": ((0x10D0, 0x10F0), ("noto/NotoSansGeorgian-Bold.ttf", "noto/NotoSerifGeorgian-Bold.ttf"), None),
    "armenian": ((0x0561, 0x0586), ("noto/NotoSansArmenian-Bold.ttf", "noto/NotoSerifArmenian-Bold.ttf"), None),
    "ethiopic": ((0x1200, 0x1357), ("noto/NotoSansEthiopic-Bold.ttf", "noto/NotoSerifEthiopic-Bold.ttf"), None),
    "greek": ((0x03B1, 0x03C9), ("dejavu/DejaVuSans-Bold.ttf", "dejavu/DejaVuSerif-Bold.ttf",
                                  "noto/NotoSans-Bold.ttf"), None),
    "cyrillic": ((0x0430, 0x044F), ("dejavu/DejaVuSans-Bold.ttf", "dejavu/DejaVuSerif-Bold.ttf",
                                     "noto/NotoSerif-Bold.ttf", "liberation/LiberationSans-Bold.ttf"), None),
}
PER_SCRIPT = 60


@dataclass(frozen=True)
class Wordmark:
    """What to set: a brand's name (and its mark, for combination marks) or a script's made-up name."""

    text: str | None  # None: make up a name in ``script``
    script: str = "latin"
    logo: logos.LogoSvg | None = None


def font_file(fonts: Path, relative: str) -> Path:
    return fonts / _TRUETYPE / relative


def render_wordmark(mark: Wordmark, fonts: dict[str, Path], rng: np.random.Generator) -> tuple[bytes, dict]:
    """Set the name on a canvas like ``logos.render_logo`` does a mark; return file bytes."""
    direction = None
    if mark.script == "latin":
        package, relative = LATIN_FACES[int(rng.integers(len(LATIN_FACES)))]
        text = mark.text or ""
        roll = rng.random()
        if roll < 0.25:
            text = text.upper()
        elif roll < 0.35:
            text = text.lower()
    else:
        (low, high), faces, direction = SCRIPTS[mark.script]
        package = "fonts-dejavu-core" if faces[0].startswith("dejavu") else "fonts-noto-core"
        relative = faces[int(rng.integers(len(faces)))]
        package = {"dejavu": "fonts-dejavu-core", "noto": "fonts-noto-core",
                   "liberation": "fonts-liberation"}[relative.split("/")[0]]
        words = [
            "".join(chr(int(c)) for c in rng.integers(low, high + 1, size=int(rng.integers(2, 7))))
            for _ in range(int(rng.integers(1, 3)))
        ]
        text = " ".join(words)
    px = round(log_uniform(rng, 24, 160))
    font = ImageFont.truetype(str(font_file(fonts[package], relative)), px)
    colour = _ink(mark, rng)
    spacing = float(rng.choice([0, 0, 0, 0.05, 0.15])) * px
    text_img = _set_text(text, font, colour, spacing, direction)
    params: dict = {"font": f"{package}:{relative}", "px": px, "colour": hex_colour(colour), "text": text}
    img = text_img
    roll = rng.random()
    if mark.logo is not None and roll < 0.3:  # combination mark: the brand's mark, then its name
        symbol = logos._rasterise(logos._paint(mark.logo.svg, colour) if mark.logo.mono else mark.logo.svg,
                                  round(text_img.height * rng.uniform(1.0, 1.6)))
        gap = round(px * rng.uniform(0.2, 0.5))
        img = Image.new("RGBA", (symbol.width + gap + text_img.width, max(symbol.height, text_img.height)))
        img.alpha_composite(symbol, (0, (img.height - symbol.height) // 2))
        img.alpha_composite(text_img, (symbol.width + gap, (img.height - text_img.height) // 2))
        params["combination"] = True
    elif roll < 0.45:  # on a pill or a box of another colour
        pad = round(px * rng.uniform(0.3, 0.8))
        box_colour = random_colour(rng, lightness=(0.05, 0.35) if luminance(colour) > 0.6 else (0.6, 0.97))
        img = Image.new("RGBA", (text_img.width + 2 * pad, text_img.height + 2 * pad))
        ImageDraw.Draw(img).rounded_rectangle([0, 0, img.width - 1, img.height - 1],
                                              radius=round(min(img.size) * rng.uniform(0, 0.5)),
                                              fill=(*box_colour, 255))
        img.alpha_composite(text_img, (pad, pad))
        params["box"] = hex_colour(box_colour)
    img = logos._pad(img, rng)
    background = logos._pick_background(rng, colour)
    if logos._contrast(img, background or logos.WHITE) < logos.MIN_CONTRAST:
        background = max((logos.WHITE, logos.BLACK), key=lambda c: logos._contrast(img, c))
    if background is not None:
        img = logos.flatten(img, background)
    data, encoding = encode(img, rng, jpeg_share=0.35)
    params["background"] = "transparent" if background is None else hex_colour(background)
    return data, {**params, **encoding}


def _ink(mark: Wordmark, rng: np.random.Generator) -> tuple[int, int, int]:
    roll = rng.random()
    if roll < 0.5:
        if mark.logo is not None and mark.logo.colour:
            return parse_hex(mark.logo.colour)
        return random_colour(rng)
    return logos.BLACK if roll < 0.85 else logos.WHITE


def _set_text(text: str, font: ImageFont.FreeTypeFont, colour: tuple[int, int, int], spacing: float,
              direction: str | None) -> Image.Image:
    """The text alone, cropped to its ink, on a transparent canvas."""
    if spacing and direction is None:
        widths = [font.getlength(ch) + spacing for ch in text]
        width = round(sum(widths) + font.size)
    else:
        width = round(font.getlength(text, direction=direction) + font.size)
    height = round(font.size * 2)
    img = Image.new("RGBA", (max(1, width), height))
    draw = ImageDraw.Draw(img)
    if spacing and direction is None:
        x = font.size / 2
        for ch, w in zip(text, widths):
            draw.text((x, font.size / 3), ch, font=font, fill=(*colour, 255))
            x += w
    else:
        draw.text((font.size / 2, font.size / 3), text, font=font, fill=(*colour, 255), direction=direction)
    box = img.getchannel("A").getbbox()
    if box is None:
        raise logos.BlankRender("no glyphs")
    return img.crop(box)
