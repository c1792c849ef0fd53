"""The labelled logo data set: what goes in, how it is split, and how each item is made.

Class 1 (logo): one rendering of every SVG in the npm logo packages, and hard positives:
some of those marks on photographs or as small, badly compressed copies, and wordmarks
(brand names set in many faces, and made-up names in eleven scripts). Class 0
(out_of_domain): many random crops of each photograph, synthetic text pages, charts and
maps, real documentation figures (plots, diagrams, screenshots, clip art, maps, typeset
formulas) from Debian packages, and chemical structure drawings. Every item records its
``kind`` (``KINDS``), which the evaluation reports separately. Splits are made per source (a brand with all its variants
and its wordmark, a photograph, a synthetic image, a figure and its numbered variants),
never per crop, with seed 1984: test first, then validation out of the rest.

Every item ends as file bytes that go through the serving decode rule
(``imaging.serving_tensor``); each has its own seed, so results do not depend on which
worker process renders it or in what order.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from preprocessing.decode import DecodeError
from training.logo import LABELS, figures, logos, metrics, photos, sources, structures, synthetic, wordmarks
from training.logo.fetch import Package
from training.logo.imaging import serving_tensor

SEED = 1984
TEST_SHARE = 0.1
VAL_SHARE = 0.2
CROPS_PER_PHOTO = 64
SYNTHETIC_PER_KIND = 300
# Hard positives per logo (each drawn with the logo's seed): the mark on a photograph, and
# a small or badly compressed copy. Wordmarks: the name of that share of simple-icons brands.
ON_PHOTO_SHARE = 0.12
LOWRES_SHARE = 0.10
WORDMARK_SHARE = 0.4
# Tasks handed to the render pool at a time (see render_all).
WINDOW = 256

# What the evaluation reports separately. Negatives: photographs, then the flat graphics.
FLAT_KINDS = metrics.FLAT_KINDS
NEGATIVE_KINDS = ("photo", *FLAT_KINDS)
POSITIVE_KINDS = ("wordmark", "mark")
KINDS = NEGATIVE_KINDS + POSITIVE_KINDS
_SYNTHETIC_KIND = {"document": "page", "chart": "plot", "map": "map"}


@dataclass(frozen=True)
class Item:
    id: str
    label: int
    group: str
    split: str
    kind: str  # one of KINDS
    variant: str  # how it was made: plain, on_photo, lowres, synthetic, a package name, a script
    package: str
    version: str
    licence: str
    source_file: str
    seed: int


@dataclass(frozen=True)
class Task:
    """One unit of rendering work: a logo (and its variants), every crop of one photo, one
    synthetic image, one figure, one wordmark or one chemical structure."""

    kind: str  # "logo", "photo", "figure", "wordmark", "structure" or one of synthetic.KINDS
    items: tuple[Item, ...]
    payload: logos.LogoSvg | Path | figures.Figure | wordmarks.Wordmark | structures.Structure | None = None
    photos: tuple[Path, ...] = ()  # for a logo's on_photo variant: photographs of its split
    fonts: tuple[tuple[str, Path], ...] = ()  # for wordmarks: font package -> extracted root


@dataclass(frozen=True)
class Rendered:
    item: Item
    image: np.ndarray | None  # uint8 224x224x3, None when the source could not be rendered
    params: dict


@dataclass(frozen=True)
class _Source:
    """One source before splitting: everything made from it lands in the same split."""

    kind: str
    label: int
    group: str
    items: list[dict]  # Item fields other than label, group, split and seed
    payload: logos.LogoSvg | Path | figures.Figure | wordmarks.Wordmark | structures.Structure | None = None


def _chance(item_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by the id: which logos get which hard variant."""
    return _seed(f"{salt}:{item_id}") / 2**64


def plan(packages: dict[str, Package]) -> list[Task]:
    """Every rendering task of the data set, in a fixed order, with splits assigned."""
    found: list[_Source] = []
    for name in sources.npm_packages():
        package = packages[name]
        for logo in logos.read_logos(name, package.root):
            base = f"npm:{name}/{logo.source_file}"
            kind = "wordmark" if "wordmark" in logo.source_file else "mark"
            meta = dict(package=name, version=package.version, licence=logo.licence or package.licence,
                        source_file=logo.source_file)
            variants = [dict(meta, id=base, kind=kind, variant="plain")]
            if _chance(base, "on_photo") < ON_PHOTO_SHARE:
                variants.append(dict(meta, id=f"{base}#on_photo", kind=kind, variant="on_photo"))
            if _chance(base, "lowres") < LOWRES_SHARE:
                variants.append(dict(meta, id=f"{base}#lowres", kind=kind, variant="lowres"))
            found.append(_Source("logo", 1, f"brand:{logo.brand}", variants, logo))
            if logo.title and _chance(base, "wordmark") < WORDMARK_SHARE:
                item = dict(meta, id=f"{base}#wordmark", kind="wordmark", variant="latin",
                            licence=f"text: the brand's name; rendering CC0-1.0; face: see render.font")
                found.append(_Source("wordmark", 1, f"brand:{logo.brand}", [item],
                                     wordmarks.Wordmark(logo.title, logo=logo)))
    for script in wordmarks.SCRIPTS:
        for i in range(wordmarks.PER_SCRIPT):
            item = dict(package="generated", version="", licence="CC0-1.0 (generated here); face: see render.font",
                        source_file=f"training/logo/wordmarks.py:{script}", id=f"wordmark:{script}#{i}",
                        kind="wordmark", variant=script)
            found.append(_Source("wordmark", 1, f"wordmark:{script}#{i}", [item], wordmarks.Wordmark(None, script)))
    for photo in sources.PHOTOS:
        package = packages[photo.package]
        meta = dict(package=photo.package, version=package.version, licence=photo.licence,
                    source_file=photo.path, kind="photo", variant="crop")
        crops = [dict(meta, id=f"{photo.package}:{photo.path}#crop{i}") for i in range(CROPS_PER_PHOTO)]
        found.append(_Source("photo", 0, f"photo:{photo.package}/{photo.path}", crops,
                             package.root / photo.path))
    for kind in synthetic.KINDS:
        for i in range(SYNTHETIC_PER_KIND):
            meta = dict(package="synthetic", version="", licence="CC0-1.0 (generated here)",
                        source_file=f"training/logo/synthetic.py:{kind}", id=f"synthetic:{kind}#{i}",
                        kind=_SYNTHETIC_KIND[kind], variant="synthetic")
            found.append(_Source(kind, 0, f"synthetic:{kind}#{i}", [meta]))
    for figure_set in sources.FIGURES:
        package = packages[figure_set.package]
        for figure in figures.read_figures(figure_set, package.root, SEED):
            meta = dict(package=figure_set.package, version=package.version, licence=figure_set.licence,
                        source_file=figure.source_file, id=f"deb:{figure_set.package}/{figure.source_file}",
                        kind=figure_set.kind, variant=figure_set.package)
            found.append(_Source("figure", 0, f"figure-{figure_set.kind}:{figure.group}", [meta], figure))
    rdkit = packages[sources.STRUCTURE_PACKAGE]
    for structure in structures.read_structures(SEED):
        meta = dict(package=rdkit.name, version=rdkit.version, licence=structures.LICENCE,
                    source_file=structures.SOURCE_FILE, id=f"pypi:{rdkit.name}/{structures.SOURCE_FILE}#{structure.nsc}",
                    kind="structure", variant=rdkit.name)
        found.append(_Source("structure", 0, f"structure:{structure.nsc}", [meta], structure))

    splits = assign_splits({source.group for source in found})
    photos_by_split: dict[str, list[Path]] = {}
    for photo in sources.PHOTOS:
        split = splits[f"photo:{photo.package}/{photo.path}"]
        photos_by_split.setdefault(split, []).append(packages[photo.package].root / photo.path)
    fonts = tuple((name, packages[name].root) for name in sources.FONT_PACKAGES)
    tasks = []
    for source in found:
        split = splits[source.group]
        items = tuple(Item(label=source.label, group=source.group, split=split, seed=_seed(meta["id"]), **meta)
                      for meta in source.items)
        extra: dict = {}
        if any(item.variant == "on_photo" for item in items):
            extra["photos"] = tuple(photos_by_split[split])
        if source.kind == "wordmark":
            extra["fonts"] = fonts
        tasks.append(Task(source.kind, items, source.payload, **extra))
    return tasks


def assign_splits(groups: set[str]) -> dict[str, str]:
    """Split source groups, stratified by the group's prefix: "brand", "wordmark", "photo",
    "synthetic", "figure-<kind>" and "structure".

    Stratifying keeps the 44 photographs from being outnumbered by the synthetic images
    when the shares are drawn, and gives each split its share of every kind of figure.
    Within a stratum the groups are ordered by a hash of their name (with ``SEED``), not
    by a permutation of the list: adding or removing a source then moves only the groups
    at the split boundaries, so the next model's training set does not take in the last
    one's test sources.
    """
    splits: dict[str, str] = {}
    for stratum in sorted({group.split(":", 1)[0] for group in groups}):
        order = sorted((group for group in groups if group.split(":", 1)[0] == stratum),
                       key=lambda group: (_seed(f"split:{group}"), group))
        n_test = round(len(order) * TEST_SHARE)
        n_val = round((len(order) - n_test) * VAL_SHARE)
        for i, group in enumerate(order):
            splits[group] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return splits


def render_all(tasks: list[Task], workers: int | None = None) -> Iterator[Rendered]:
    """Render every item in ``tasks`` order, in parallel worker processes."""
    total = sum(len(task.items) for task in tasks)
    # spawn, not fork: the parent may already run torch/onnxruntime thread pools.
    with multiprocessing.get_context("spawn").Pool(workers or os.cpu_count()) as pool, \
            tqdm(total=total, desc="render", unit="img") as progress:
        # imap renders ahead of the consumer without limit; windows of tasks cap the images
        # waiting in memory (all of them would be 1.8 GB while the backbone catches up).
        for start in range(0, len(tasks), WINDOW):
            # Small chunks: a photo task holds CROPS_PER_PHOTO items and must not pile up on one worker.
            for results in pool.imap(render_task, tasks[start : start + WINDOW], chunksize=4):
                progress.update(len(results))
                yield from results


def render_task(task: Task) -> list[Rendered]:
    if task.kind == "photo":
        photo = photos.load_photo(task.payload)
        return [_render(item, lambda rng: photos.render_crop(photo, rng)) for item in task.items]
    if task.kind == "logo":
        return [_render(item, _logo_variant(task, item)) for item in task.items]
    (item,) = task.items
    if task.kind == "figure":
        return [_render(item, lambda rng: figures.render_figure(task.payload.path, rng))]
    if task.kind == "wordmark":
        return [_render(item, lambda rng: wordmarks.render_wordmark(task.payload, dict(task.fonts), rng))]
    if task.kind == "structure":
        return [_render(item, lambda rng: structures.render_structure(task.payload, rng))]
    return [_render(item, lambda rng: synthetic.render_synthetic(task.kind, rng))]


# Photographs for the on_photo variant, loaded once per worker process.
_PHOTO_CACHE: dict[Path, Image.Image] = {}


def _logo_variant(task: Task, item: Item):
    if item.variant == "lowres":
        return lambda rng: logos.render_logo_lowres(task.payload, rng)
    if item.variant == "on_photo":
        def make(rng: np.random.Generator) -> tuple[bytes, dict]:
            path = task.photos[int(rng.integers(len(task.photos)))]
            if path not in _PHOTO_CACHE:
                photo = photos.load_photo(path)
                photo.thumbnail((1024, 1024), Image.Resampling.BILINEAR)
                _PHOTO_CACHE[path] = photo
            data, params = logos.render_logo_on_photo(task.payload, _PHOTO_CACHE[path], rng)
            return data, {"photo": str(path.name), **params}
        return make
    return lambda rng: logos.render_logo(task.payload, rng)


def manifest_row(rendered: Rendered) -> dict:
    return {**asdict(rendered.item), "label_name": LABELS[rendered.item.label], "render": rendered.params}


def _render(item: Item, make) -> Rendered:
    try:
        data, params = make(np.random.default_rng(item.seed))
        return Rendered(item, serving_tensor(data), params)
    except (logos.BlankRender, DecodeError, OSError, ValueError) as exc:
        # A source that renders to nothing, or a file the service itself would refuse.
        return Rendered(item, None, {"skipped": f"{type(exc).__name__}: {exc}"})


def _seed(item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{SEED}:{item_id}".encode()).digest()[:8], "little")
