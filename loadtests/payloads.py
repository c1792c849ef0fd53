"""Request payloads built from registry-package images.

Photos come from the Debian wallpaper packages and logos from npm ``simple-icons``, the
same sources the logo model trains on and fetched the same way, once, into ``build/``:
``python -m loadtests.payloads`` (which ``make loadtest``, ``soak``, ``bench`` and
``gpu-bench`` run first) fetches them when they are missing. A load test itself never
touches the network.
Three kinds, because decode cost dominates and depends on them:

* ``thumb``: JPEG photos 330–800 px wide, what a lookup by file name fetches;
* ``logo``: PNG logos with alpha, 256–512 px;
* ``large``: full-size JPEG photos (4 MP wallpapers, and one upscaled to 12 MP);
* ``clip``: 12 s 480×270 H.264 MP4s of photo scenes, for the video endpoint.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from devtools.images import encode
from preprocessing.decode import decode_image
from training.logo.fetch import fetch_debs, fetch_npm
from training.logo.sources import DEB_PACKAGES, PHOTOS

ROOT = Path(__file__).resolve().parent.parent
DEB_ROOT = ROOT / "build" / "deb"
NPM_PREFIX = ROOT / "build" / "npm"
SIMPLE_ICONS = NPM_PREFIX / "node_modules" / "simple-icons" / "icons"
MISSING = "run `python -m loadtests.payloads` first"
KINDS = ("thumb", "logo", "large", "clip")


@cache
def _photos() -> tuple[tuple[str, bytes], ...]:
    found = [
        (f"{p.package}-{i}", (DEB_ROOT / p.package / p.path).read_bytes())
        for i, p in enumerate(PHOTOS)
        if p.package in DEB_PACKAGES and (DEB_ROOT / p.package / p.path).exists()
    ]
    if not found:
        raise FileNotFoundError(f"no photos under {DEB_ROOT}: {MISSING}")
    return tuple(found)


def thumbs(count: int = 24, seed: int = 0) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    out = []
    photos = _photos()
    for i in range(count):
        name, data = photos[i % len(photos)]
        img = decode_image(data)
        width = int(rng.integers(330, 801))
        img = img.resize((width, max(1, round(img.height * width / img.width))), Image.Resampling.BILINEAR)
        out.append((f"{name}_{i}_{width}px.jpg", encode(img, "JPEG", quality=85)))
    return out


def logos(count: int = 24, seed: int = 0) -> list[tuple[str, bytes]]:
    import cairosvg  # build-time dependency; only needed when logo payloads are asked for

    rng = np.random.default_rng(seed)
    svgs = sorted(SIMPLE_ICONS.glob("*.svg"))
    if not svgs:
        raise FileNotFoundError(f"no SVGs under {SIMPLE_ICONS}: {MISSING}")
    picks = rng.choice(len(svgs), size=count, replace=False)
    out = []
    for i in picks:
        side = int(rng.integers(256, 513))
        png = cairosvg.svg2png(bytestring=svgs[i].read_bytes(), output_width=side, output_height=side)
        out.append((f"{svgs[i].stem}.png", png))
    return out


def large(count: int = 4) -> list[tuple[str, bytes]]:
    photos = _photos()
    out = [(f"{name}.jpg", data) for name, data in photos[: max(1, count - 1)]]
    name, data = photos[0]
    twelve_mp = decode_image(data).resize((4000, 3000), Image.Resampling.BICUBIC)
    out.append((f"{name}_12MP.jpg", encode(twelve_mp, "JPEG", quality=90)))
    return out[:count]


def clips(count: int = 2) -> list[tuple[str, bytes]]:
    from devtools.videos import H264
    from devtools.videos import encode as encode_video

    photos = _photos()
    out = []
    for i in range(count):
        scenes = [
            (decode_image(photos[(i * 4 + k) % len(photos)][1]).resize((480, 270)), 3.0)
            for k in range(4)
        ]
        out.append((f"clip_{i}.mp4", encode_video(scenes, fps=24, codec=H264)))
    return out


def by_kind(kind: str, count: int) -> list[tuple[str, bytes]]:
    return {"thumb": thumbs, "logo": logos, "large": large, "clip": clips}[kind](count)


def fetch() -> None:
    """Fetch the packages the payloads are made from, unless the logo build already has:
    both fetches skip what their stamps say is there."""
    fetch_npm(NPM_PREFIX, ("simple-icons",))
    fetch_debs(DEB_ROOT, DEB_PACKAGES)


if __name__ == "__main__":
    fetch()
