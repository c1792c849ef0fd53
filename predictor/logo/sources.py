"""Every package and file the logo detector learns from, with its licence.

Only registry packages are used, so a fresh machine rebuilds the same data set. This
module is the complete allow-list: nothing else is fetched, and it names none of the
packages the brief (§3) reserves for the held-out benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

@dataclass(frozen=True)
class PhotoFile:
    """A photograph inside a package: ``path`` is relative to the extracted package root."""

    package: str
    path: str
    licence: str


# The npm logo packages are pinned in package.json beside this file (and its lock);
# their licences are read from each installed package's own package.json.
NPM_MANIFEST = Path(__file__).with_name("package.json")
NPM_LOCK = Path(__file__).with_name("package-lock.json")

# Debian packages are not pinnable by apt-get download; the manifest records the version.
DEB_PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds")

# PyPI wheels downloaded (never installed) only for their sample images.
WHEELS = {"scikit-image": "0.26.0", "scikit-learn": "1.9.1", "matplotlib": "3.11.2"}

_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_MATE = "usr/share/backgrounds/mate/nature/{}.jpg"
_SKIMAGE = "skimage/data/{}"

# Chosen by looking at every image in these packages: only real photographs (and
# scientific or scanned imagery, which Commons also holds). Renders, abstract art and
# images that are themselves logos (skimage's logo.png, matplotlib's logo2.png) are left out.
# Licences: plasma from each wallpaper's metadata.json, MATE from debian/copyright,
# scikit-image from the docstrings in skimage/data/_fetchers.py, scikit-learn from
# sklearn/datasets/images/README.txt.
PHOTOS = (
    *(
        PhotoFile("plasma-workspace-wallpapers", _PLASMA.format(name), "LGPL-3.0")
        for name in (
            "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
            "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
        )
    ),
    *(
        PhotoFile("mate-backgrounds", _MATE.format(name), "GPL-2.0-or-later")
        for name in (
            "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow",
            "LadyBird", "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower",
        )
    ),
    *(
        PhotoFile("scikit-image", _SKIMAGE.format(name), licence)
        for name, licence in (
            ("astronaut.png", "public domain"),
            ("brick.png", "CC0-1.0"),
            ("camera.png", "CC0-1.0"),
            ("cell.png", "CC0-1.0"),
            ("chelsea.png", "CC0-1.0"),
            ("clock_motion.png", "public domain"),
            ("coffee.png", "CC0-1.0"),
            ("coins.png", "no known copyright restrictions"),
            ("grass.png", "CC0-1.0"),
            ("gravel.png", "CC0-1.0"),
            ("hubble_deep_field.jpg", "public domain"),
            ("ihc.png", "no known copyright restrictions"),
            ("moon.png", "BSD-3-Clause (scikit-image)"),
            ("motorcycle_left.png", "BSD-3-Clause (scikit-image)"),
            ("page.png", "BSD-3-Clause (scikit-image)"),
            ("retina.jpg", "CC0-1.0"),
            ("rocket.jpg", "public domain"),
            ("text.png", "public domain"),
        )
    ),
    PhotoFile("scikit-learn", "sklearn/datasets/images/china.jpg", "CC-BY-2.0"),
    PhotoFile("scikit-learn", "sklearn/datasets/images/flower.jpg", "CC-BY-2.0"),
    PhotoFile(
        "matplotlib",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "public domain (US Navy photograph)",
    ),
)


def npm_packages() -> tuple[str, ...]:
    return tuple(json.loads(NPM_MANIFEST.read_text())["dependencies"])
