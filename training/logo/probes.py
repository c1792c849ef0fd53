"""Probes for the failure modes the model card predicts: glyphs, chemical structures, arms.

Commons holds many single-glyph images, skeletal formulae and coats of arms; all are flat
vector graphics like logos, and none is in the training data, so the model is expected to
call many of them logos. These generators draw simple stand-ins so that the evaluation can
say how often. They are probes, not a benchmark: real files vary far more.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from training.logo.imaging import encode, log_uniform

KINDS = ("glyph", "skeletal_formula", "coat_of_arms")
PER_KIND = 60
# matplotlib ships DejaVu Sans (Bitstream Vera licence), which covers Greek, Cyrillic and math.
_FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
_GLYPHS = "AQRgkß&@§¶ΑΔΘΛΞΣΦΨΩαβγλπφωБЖЯжя∑∫√∞∂≈≠∈∀ℵ←⇒↻♠♣♥♦★☆✓♀♂☉☽♪"
# Heraldic tinctures: gules, azure, vert, purpure, sable, or, argent.
_TINCTURES = ((200, 16, 46), (0, 56, 168), (0, 130, 60), (120, 40, 130), (20, 20, 20), (252, 209, 22),
              (245, 245, 245))


def render_probe(kind: str, rng: np.random.Generator) -> bytes:
    img = {"glyph": _glyph, "skeletal_formula": _skeletal_formula, "coat_of_arms": _coat_of_arms}[kind](rng)
    return encode(img, rng, jpeg_share=0.3)[0]


def _glyph(rng: np.random.Generator) -> Image.Image:
    """One character, large, black on white, as in Commons' letter and symbol files."""
    side = round(log_uniform(rng, 120, 600))
    img = Image.new("RGB", (side, side), (255, 255, 255))
    font = ImageFont.truetype(str(_FONT), round(side * 0.7))
    draw = ImageDraw.Draw(img)
    draw.text((side / 2, side / 2), str(rng.choice(list(_GLYPHS))), fill=(0, 0, 0), font=font, anchor="mm")
    return img


def _skeletal_formula(rng: np.random.Generator) -> Image.Image:
    """One to three hexagonal rings, double bonds and a few labelled substituents."""
    bond = round(log_uniform(rng, 30, 70))
    width = round(bond * rng.uniform(6, 9))
    img = Image.new("RGB", (width, round(width * rng.uniform(0.6, 0.9))), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(_FONT), round(bond * 0.5))
    centre = np.array([bond * 2.2, img.height / 2])
    line = max(2, round(bond / 18))
    for ring in range(int(rng.integers(1, 4))):
        angles = np.arange(6) * math.pi / 3 + math.pi / 6
        corners = [centre + bond * np.array([math.cos(a), math.sin(a)]) for a in angles]
        for i in range(6):
            a, b = corners[i], corners[(i + 1) % 6]
            draw.line([tuple(a), tuple(b)], fill=(0, 0, 0), width=line)
            if i % 2 == 0:  # the inner line of a double bond
                inset = (centre - (a + b) / 2) * 0.2
                draw.line([tuple(a + inset + (b - a) * 0.15), tuple(b + inset - (b - a) * 0.15)],
                          fill=(0, 0, 0), width=line)
        for i in rng.choice(6, size=int(rng.integers(1, 3)), replace=False):
            end = corners[i] + (corners[i] - centre) * 0.9
            draw.line([tuple(corners[i]), tuple(end)], fill=(0, 0, 0), width=line)
            atom = str(rng.choice(["OH", "O", "N", "NH₂", "Cl", "CH₃"]))
            draw.text(tuple(end + (corners[i] - centre) * 0.3), atom, fill=(0, 0, 0), font=font, anchor="mm")
        centre = centre + np.array([bond * math.sqrt(3), 0])  # the next ring is fused on the right
    left, top, right, bottom = ImageOps.invert(img.convert("L")).getbbox()
    return ImageOps.expand(img.crop((left, top, right, bottom)), border=bond // 2, fill=(255, 255, 255))


def _coat_of_arms(rng: np.random.Generator) -> Image.Image:
    """A shield with a heraldic division or ordinary, outlined, on white or transparent."""
    side = round(log_uniform(rng, 150, 700))
    w, h = side * 0.8, side * 0.95
    x0, y0 = (side - w) / 2, (side - h) / 2
    curve = [(x0 + w / 2 + w / 2 * math.sin(t), y0 + h * 0.55 + h * 0.45 * math.cos(t))
             for t in np.linspace(math.pi / 2, -math.pi / 2, 24)]
    shield = [(x0, y0), (x0 + w, y0), *curve, (x0, y0)]
    field, charge = (_TINCTURES[i] for i in rng.choice(len(_TINCTURES), size=2, replace=False))
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).polygon(shield, fill=255)
    art = Image.new("RGBA", (side, side), (*field, 255))
    draw = ImageDraw.Draw(art)
    division = rng.choice(["pale", "fess", "quarterly", "bend", "cross", "chevron"])
    cx, cy, band = x0 + w / 2, y0 + h / 2, w * 0.18
    if division == "pale":
        draw.rectangle([cx, 0, side, side], fill=charge)
    elif division == "fess":
        draw.rectangle([0, cy, side, side], fill=charge)
    elif division == "quarterly":
        draw.rectangle([cx, 0, side, cy], fill=charge)
        draw.rectangle([0, cy, cx, side], fill=charge)
    elif division == "bend":
        draw.line([(x0, y0), (x0 + w, y0 + h)], fill=charge, width=round(band))
    elif division == "cross":
        draw.rectangle([cx - band / 2, 0, cx + band / 2, side], fill=charge)
        draw.rectangle([0, cy - band / 2, side, cy + band / 2], fill=charge)
    else:
        draw.line([(x0, y0 + h * 0.8), (cx, y0 + h * 0.3), (x0 + w, y0 + h * 0.8)], fill=charge,
                  width=round(band))
    img = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    img.paste(art, mask=mask)
    ImageDraw.Draw(img).line(shield, fill=(0, 0, 0, 255), width=max(2, side // 80))
    if rng.random() < 0.5:
        flat = Image.new("RGB", img.size, (255, 255, 255))
        flat.paste(img, mask=img.getchannel("A"))
        return flat
    return img
